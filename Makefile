# Every target works on a fresh machine: it makes .venv and installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# vLLM on the CPU lives in an environment of its own (it pins its own torch and transformers).
VLLM_VENV := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# Third-party tools the tests round-trip with, each in its own environment (scripts/tool_env.sh).
TOOL_STAMPS := .venv-img2dataset/.installed .venv-labelstudio/.installed .venv-openclip/.installed

.PHONY: demo test test-vllm lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Build the demo dataset from scikit-image's photos and run the default recipe on it.
demo: $(STAMP)
	rm -rf demo-data
	$(BIN)/recaption demo demo-data
	$(BIN)/recaption run demo-data/pairs.jsonl demo-out --overwrite
	@echo "open demo-out/report.html in a browser"

$(VLLM_STAMP): scripts/vllm_cpu_env.sh pyproject.toml
	PY=$(PY) bash scripts/vllm_cpu_env.sh $(VLLM_VENV)

.venv-%/.installed: scripts/tool_env.sh
	PY=$(PY) bash scripts/tool_env.sh $* .venv-$*

# ruff and the import contracts (pyproject.toml: an import that runs back up a layer fails with
# the contract's name), the suite in .venv (img2dataset and Label Studio run from their own
# environments), then the vLLM backend's tests in .venv-vllm (they skip in .venv).
test: $(STAMP) $(VLLM_STAMP) $(TOOL_STAMPS) lint
	$(BIN)/python -m pytest -q
	$(MAKE) --no-print-directory test-vllm

lint: $(STAMP)
	$(BIN)/ruff check recaption tests benchmarks scripts
	$(BIN)/lint-imports

test-vllm: $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/vllm

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf demo-data demo-out $(VENV) $(VLLM_VENV) .venv-img2dataset .venv-labelstudio .venv-openclip
