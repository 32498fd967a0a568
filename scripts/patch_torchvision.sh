#!/usr/bin/env bash
# Make the registry's torchvision import beside the CPU wheel of torch (in the venv $1).
#
# torchvision's wheel is a CUDA build: it registers fake kernels for C++ ops it cannot load,
# so `import torchvision` fails with "operator torchvision::nms does not exist". Its Python
# transforms (what vLLM's processors and open_clip's data pipeline use) need none of them: the
# two unconditional registrations are made conditional on torchvision.extension._has_ops(),
# as the others already are.
set -euo pipefail
VENV=$1
meta=$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("torchvision").submodule_search_locations[0])')/_meta_registrations.py
sed -i 's/^@torch\.library\.register_fake("torchvision::\(q\{0,1\}nms\)")/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))/' "$meta"
"$VENV/bin/python" -c 'import torchvision.transforms'
