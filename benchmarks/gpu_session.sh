#!/usr/bin/env bash
# Every GPU figure in one prepared run, for the lent device machine (see benchmarks/RESULTS.md).
# Each step has its own time limit, so a slow or failing one costs only its own share;
# the logs and JSON rows go to $OUT (or ./gpu-out). Run from the repository root:
#   bash benchmarks/gpu_session.sh
# Packages the machine's image lacks come as wheels in .whl/ (ftfy, wcwidth, bitsandbytes, and
# transformers at the version the project is tested with); vLLM's CUDA wheels are far larger
# than what can be carried to an offline machine, so the vLLM rows are not measured there.
set -u
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  # The carried transformers must import beside the image's own packages; if not, use the image's.
  python3 -c 'import transformers' 2>/dev/null || { echo "carried transformers does not import: using the image's"; rm -rf /tmp/site/transformers*; }
else
  export PYTHONPATH=$PWD
fi
SIZE=${SIZE:-real}  # SIZE=tiny checks the script on a CPU with the tests' tiny models
WORK=${WORK:-/tmp/recaption-gpu}
mkdir -p "$WORK"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)'
  df -h "$WORK" /dev/shm | tail -2
} 2>&1 | tee "$OUT/machine.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s) $(date -u +%T)"
  local start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v "Loading weights" 
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s"
}

step altogether 150 python3 -m benchmarks.bench_altogether_gpu --size "$SIZE" --batches 64,128,256 --dtype bfloat16 --repeats 1
step tests 90 python3 -m pytest -q -p no:cacheprovider tests/stages/test_vlm_gpu.py
step blip2 150 python3 -m benchmarks.bench_vlm_gpu --size "$SIZE" --family blip2 --images 32 --workdir "$WORK" \
  --plan bfloat16:1,8,32 float16:32 8bit:32 --out "$OUT/vlm_rows.jsonl"
step llava 170 python3 -m benchmarks.bench_vlm_gpu --size "$SIZE" --family llava --images 32 --workdir "$WORK" \
  --plan bfloat16:1,8,32 8bit:8 --out "$OUT/vlm_rows.jsonl"
rm -rf "$WORK"
