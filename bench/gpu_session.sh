#!/usr/bin/env bash
# The GPU runs behind bench/results (one lent machine, no network): install the carried wheels,
# then one phase: checks | ops | gemm | overlap. Results go to $OUT (default bench/results).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PWD || exit 2
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
step() { echo "=== $* ($(date +%T))"; timeout "${STEP_TIMEOUT:-540}" "$@" 2>&1 | tee -a "$OUT/gpu-session.log"; }
case "${1:-checks}" in
  checks)
    nvidia-smi -L; python3 -c "import torch, triton; print(torch.__version__, triton.__version__)"
    step python3 -m pytest -q -p no:cacheprovider tests/test_overlap_gpu.py
    step python3 bench/ops.py check --out "$OUT" --points 2
    step python3 bench/gemm.py check --out "$OUT" --points 2 --workers 14
    step python3 bench/launch_overhead.py --out "$OUT" ;;
  ops) step python3 bench/ops.py bench --out "$OUT" ;;
  gemm) step python3 bench/gemm.py bench --out "$OUT" --workers 14 --from-lock "${LOCK:-bench/results/gemm-lock-nvidia-h100-80gb-hbm3.json}" ;;
  overlap) step python3 bench/overlap_loopback.py --out "$OUT" ;;
esac
