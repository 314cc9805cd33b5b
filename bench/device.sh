#!/usr/bin/env bash
# The GPU checks in one prepared run, for a machine with a CUDA device:
#   bash bench/device.sh [OUT_DIR]
# It sets up .venv if needed (scripts/setup.sh), then runs the `gpu` tests, bench.generation on
# CUDA (tiny, offline, and the paper architecture with RANDOM weights; batch 16 and 64) and
# bench.startup, writing each step's output to OUT_DIR (default: $OUT, else runs/device) and
# a summary of every figure line to OUT_DIR/summary.txt. A failed step is recorded and the
# next one still runs; the exit status is 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/device}}
mkdir -p "$out"
summary=$out/summary.txt
: >"$summary"
failed=0

step() {  # step NAME COMMAND...: run, keep the log, copy its last line to the summary
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$summary"
    local started=$SECONDS
    if "$@" >"$out/$name.log" 2>&1; then
        echo "   $(tail -n 1 "$out/$name.log")  [$((SECONDS - started)) s]" | tee -a "$summary"
    else
        echo "   FAILED (exit $?) [$((SECONDS - started)) s]; see $out/$name.log" | tee -a "$summary"
        failed=1
    fi
}

bash scripts/setup.sh >"$out/setup.log" 2>&1 || { echo "setup failed; see $out/setup.log"; exit 1; }
PY=.venv/bin/python
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; } >>"$summary" 2>&1

step gpu-tests "$PY" -m pytest -m gpu -p no:cacheprovider -q
for batch in 16 64; do
    step "generation-tiny-b$batch" "$PY" -m bench.generation --device cuda --preset tiny --batch "$batch"
    step "generation-offline-b$batch" "$PY" -m bench.generation --device cuda --preset offline --batch "$batch"
    # the paper's EVA02-L-14 + GPT-2 medium with random weights: the naive reference would take minutes
    step "generation-paper-random-b$batch" "$PY" -m bench.generation --device cuda --preset paper --random-weights \
        --batch "$batch" --skip-naive
done
step startup-offline "$PY" -m bench.startup --preset offline --checkpoint checkpoints/demo-offline
exit $failed
