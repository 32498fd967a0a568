#!/usr/bin/env bash
# A virtualenv of its own for a third-party tool the tests round-trip with (make .venv-TOOL).
#
# img2dataset and Label Studio pin their own numpy, pandas, pyarrow and Django; installed
# beside the project they would downgrade what it is tested with. Each lives in its own
# environment, at the version the README's "Works with" table names, and the tests run its
# command line (img2dataset) or start its server on 127.0.0.1 (label-studio).
#   bash scripts/tool_env.sh img2dataset .venv-img2dataset
#   bash scripts/tool_env.sh labelstudio .venv-labelstudio
#   bash scripts/tool_env.sh openclip .venv-openclip   (open_clip's own training data code)
set -euo pipefail
TOOL=$1
VENV=$2
PY=${PY:-python3}
case "$TOOL" in
  img2dataset) SPEC="img2dataset==${IMG2DATASET_VERSION:-1.47.0}"; CHECK=(img2dataset --help) ;;
  # (not `label-studio --version`: it asks pypi.org for the latest and can hang there)
  labelstudio) SPEC="label-studio==${LABEL_STUDIO_VERSION:-1.23.2}"; CHECK=(python -c "import label_studio") ;;
  # The CPU wheel of torch first (any other torch pulls a CUDA build), then the torchvision
  # made for it, which needs scripts/patch_torchvision.sh to import; webdataset as open_clip's
  # training requirements pin it (its 1.x samples lack the "fname" open_clip_train reads).
  openclip) SPEC="open_clip_torch==${OPEN_CLIP_VERSION:-3.3.0} torch==2.13.0 torchvision==0.28.0 webdataset<=0.2.86 pandas braceexpand"; CHECK=(python -c "import open_clip_train.data") ;;
  *) echo "unknown tool $TOOL (img2dataset, labelstudio, openclip)" >&2; exit 2 ;;
esac
$PY -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
[ "$TOOL" = openclip ] && "$VENV/bin/pip" install -q torch==2.13.0
# shellcheck disable=SC2086 - SPEC is a list of requirements
"$VENV/bin/pip" install -q $SPEC
[ "$TOOL" = openclip ] && bash "$(dirname "$0")/patch_torchvision.sh" "$VENV"
"$VENV/bin/${CHECK[0]}" "${CHECK[@]:1}" > /dev/null
touch "$VENV/.installed"
