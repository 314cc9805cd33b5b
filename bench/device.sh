#!/usr/bin/env bash
# The GPU checks in one prepared run, for a machine with a CUDA device:
#   bash bench/device.sh [OUT_DIR]
#   ONLY='worker|generation-offline' bash bench/device.sh      # only the steps whose names match
# It sets up .venv if needed (scripts/setup.sh) or, where PYTHON names an interpreter that has the
# packages already (an offline machine set up by scripts/gpu_unbundle.sh), uses that one as it is.
# Then, most wanted first, so that a run cut short by its time limit keeps those:
#   - bench.worker end to end on CUDA (embedded broker, the demo checkpoint, a 4,000-post burst,
#     micro-batches of 256, pipelined): captions/s, p50/p99 latency and the GPU's utilisation; then the same
#     worker with --null-model, its ceiling on that machine's CPU;
#   - bench.generation with the offline preset at batch 16, 64 (each checked identical to the naive
#     reference) and 256: speedup_vs_hf;
#   - the paper architecture (EVA02-L-14 + GPT-2 medium) with RANDOM weights, timing only;
#   - the `gpu` tests, the tiny preset's bench.generation, and bench.startup.
# Every step's output goes to OUT_DIR/steps.log and its last line, with its time, to OUT_DIR/summary.txt
# (OUT_DIR: default $OUT, else runs/device; two files, as few come back from a lent machine). A failed
# step is recorded and the next one still runs; the exit status is 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-runs/device}}
mkdir -p "$out"
summary=$out/summary.txt log=$out/steps.log
: >"$summary"
: >"$log"
failed=0

step() {  # step NAME COMMAND...: run, append its output to steps.log, copy its last line to the summary
    local name=$1
    shift
    [[ -z ${ONLY:-} || $name =~ $ONLY ]] || return 0
    echo "== $name: $*" | tee -a "$summary" >>"$log"
    local started=$SECONDS status=0
    "$@" >"$out/step.tmp" 2>&1 || status=$?
    cat "$out/step.tmp" >>"$log"
    if (( status == 0 )); then
        echo "   $(tail -n 1 "$out/step.tmp")  [$((SECONDS - started)) s]" | tee -a "$summary"
    else
        echo "   FAILED (exit $status) [$((SECONDS - started)) s]; see steps.log" | tee -a "$summary"
        failed=1
    fi
    rm -f "$out/step.tmp"
}

if [[ -n ${PYTHON:-} ]]; then
    PY=$PYTHON  # an interpreter that has the packages already (scripts/gpu_unbundle.sh): no set-up
else
    bash scripts/setup.sh >"$out/setup.log" 2>&1 || { echo "setup failed; see $out/setup.log"; exit 1; }
    PY=.venv/bin/python
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; nproc; } >>"$summary" 2>&1

export PYTHONUNBUFFERED=1
step worker-offline-b256 "$PY" -m bench.worker --preset offline --checkpoint checkpoints/demo-offline --device cuda \
    --posts 4000 --batch-size 256 --runs pipelined
step worker-null-b256 "$PY" -m bench.worker --preset offline --null-model --posts 4000 --batch-size 256 --runs pipelined
for batch in 16 64; do
    step "generation-offline-b$batch" "$PY" -m bench.generation --device cuda --preset offline --batch "$batch"
done
step generation-offline-b256 "$PY" -m bench.generation --device cuda --preset offline --batch 256 --skip-naive
for batch in 16 64; do
    # the paper's EVA02-L-14 + GPT-2 medium with random weights: the naive reference would take minutes
    step "generation-paper-random-b$batch" "$PY" -m bench.generation --device cuda --preset paper --random-weights \
        --batch "$batch" --skip-naive
done
step gpu-tests "$PY" -m pytest -m gpu -p no:cacheprovider -q
for batch in 16 64; do
    step "generation-tiny-b$batch" "$PY" -m bench.generation --device cuda --preset tiny --batch "$batch"
done
step startup-offline "$PY" -m bench.startup --preset offline --checkpoint checkpoints/demo-offline
exit $failed
