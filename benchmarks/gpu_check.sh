#!/usr/bin/env bash
# The one prepared run for a GPU machine (the `device` tool, or any CUDA box):
#   1. what the machine has (torch, GPU, the packages labkit imports);
#   2. the fast path's tests on CUDA (tests/test_cuda.py, tests/test_fastpath.py);
#   3. the benchmark, gpu profile (course sizes), its table written to $OUT/table.md.
#
#   bash benchmarks/gpu_check.sh          # writes into $OUT, or ./gpu-check when OUT is unset
#   BENCH_ARGS="--profile smoke" PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh   # a dry run
#
# Each part has its own time limit and runs even if the one before failed, so one call
# brings back whatever could be measured. About 5 minutes on an H100/H200 (most of it
# compiling); the device tool's call should allow 9. labkit needs torch, numpy,
# safetensors, Pillow, tqdm and matplotlib, all in the device machines' image; nothing is
# installed here.
set -uo pipefail
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BENCH_ARGS=${BENCH_ARGS:---profile gpu}
export PYTHONUNBUFFERED=1 LABKIT_PROFILE=smoke
status=0

echo "== 1. machine" | tee "$OUT/machine.txt"
timeout 60 "$PY" - <<'EOF' 2>&1 | tee -a "$OUT/machine.txt" || status=1
import platform, torch, numpy, safetensors, PIL, tqdm, matplotlib
print("python", platform.python_version(), "| torch", torch.__version__, "| numpy", numpy.__version__,
      "| safetensors", safetensors.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
import labkit
print("labkit imports from", labkit.__file__)
EOF
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee -a "$OUT/machine.txt"

echo "== 2. tests on CUDA" | tee "$OUT/pytest.txt"
# -o addopts="": the project's default options need nbval, which the image lacks.
timeout 200 "$PY" -m pytest -q -o addopts="" -p no:cacheprovider tests/test_cuda.py tests/test_fastpath.py \
    2>&1 | tee -a "$OUT/pytest.txt" || status=1

echo "== 3. benchmark: $BENCH_ARGS" | tee "$OUT/bench.txt"
# shellcheck disable=SC2086  (BENCH_ARGS holds several words)
timeout 330 "$PY" benchmarks/bench_speed.py $BENCH_ARGS --out "$OUT/table.md" \
    2>&1 | tee -a "$OUT/bench.txt" || status=1

exit $status
