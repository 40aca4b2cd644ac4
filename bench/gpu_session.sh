#!/usr/bin/env bash
# Issue #6's GPU checks in one run, for a machine with an NVIDIA GPU, nvcc and CuPy (the device machine
# a session may be lent has them all, and no network): build minigrad there, run the GPU tests, the
# GPU benchmark, then train_char.py --device cuda on tiny-shakespeare. Each stage has its own time
# limit and the next one runs whatever happened; every log lands in $OUT (default out/gpu_session).
#
#   bash bench/gpu_session.sh                          # every stage; the full 5,000-iteration run last
#   STAGES="build tests bench" bash bench/gpu_session.sh # some stages (build is needed once per machine)
#   STAGES="build train" ITERS=500 bash bench/gpu_session.sh
#
# Needs data/tinyshakespeare.txt (copy it there first; on the device machine, carry data/).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/gpu_session}
ITERS=${ITERS:-5000}
STAGES=${STAGES:-build tests bench train}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PYTHON=${PYTHON:-python3}
stage() { echo "== $(date -u +%FT%TZ) $*" | tee -a "$OUT/session.log"; }
want() { [[ " $STAGES " == *" $1 "* ]]; }

stage "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUT/session.log"
nvcc --version 2>&1 | tail -2 | tee -a "$OUT/session.log"

if want build; then
    stage "build (no network: the build requirements must be installed already)"
    timeout 400 "$PYTHON" -m pip install --no-build-isolation --no-deps -Cbuild-dir=build/gpu -e . >"$OUT/build.log" 2>&1
    echo "pip exit $?" | tee -a "$OUT/session.log"
fi
"$PYTHON" -c "import minigrad, json; print(json.dumps(minigrad.backend_info(), indent=1))" 2>&1 | tee -a "$OUT/session.log"

if want tests; then
    stage "GPU tests (tests/test_cuda.py -m gpu)"
    timeout 300 "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda.py -rfs >"$OUT/gpu_tests.log" 2>&1
    echo "pytest exit $?" | tee -a "$OUT/session.log"
    tail -5 "$OUT/gpu_tests.log" | tee -a "$OUT/session.log"
fi

if want bench; then
    stage "benchmark (bench/bench_gpu.py)"
    timeout 300 "$PYTHON" bench/bench_gpu.py --json "$OUT/bench_gpu.json" >"$OUT/bench.log" 2>&1
    echo "bench exit $?" | tee -a "$OUT/session.log"
    tail -12 "$OUT/bench.log" | tee -a "$OUT/session.log"
fi

if want train; then
    stage "train_char.py --device cuda --max-iters $ITERS"
    timeout 900 "$PYTHON" train_char.py --device cuda --max-iters "$ITERS" --out-dir out/gpu_run --overwrite >"$OUT/train.log" 2>&1
    echo "train exit $?" | tee -a "$OUT/session.log"
    cp out/gpu_run/metrics.csv "$OUT/metrics.csv" 2>/dev/null
    tr '\r' '\n' <"$OUT/train.log" | grep -E "^iter [0-9]+|tokens/s" | tail -12 | tee -a "$OUT/session.log"
fi
stage "done"
