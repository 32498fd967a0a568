# Every target works on a fresh machine: it makes .venv and installs what it needs first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

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

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf demo-data demo-out $(VENV)
