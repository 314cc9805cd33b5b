#!/usr/bin/env bash
# Device call 2 (docs/GPU.md), at once after prepare_on_device.sh: join the LM's two parts,
# train one or two named runs side by side, and leave each run's log and float16 copy
# (in 15 MB pieces, the most a returned file may hold) in $OUT.
# Usage: bash scripts/gpu/train_on_device.sh NAME "TRAIN ARGS" [NAME "TRAIN ARGS"]
#   env: DEADLINE (seconds after the start at which unfinished runs stop; default 560), DEVICE (default cuda)
set -uo pipefail
source scripts/gpu/device_paths.sh
DEADLINE=${DEADLINE:-560}
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

pids=()
names=()
while (( $# >= 2 )); do
    name=$1 args=$2
    shift 2
    (( $(left) > 0 )) || { say "no time left for run $name"; break; }
    say "run $name: $args"
    # shellcheck disable=SC2086  # the run's arguments are meant to split
    timeout "$(left)" python3 scripts/gpu/device_entry.py train --data $DATA --cache-dir $CACHE --device "$DEVICE" \
        $args --out /tmp/$name > "$OUT/$name.log" 2>&1 &
    # both start at once: each encodes the images it does not find in the shared cache (its
    # writes are atomic), which costs less of the deadline than waiting for the first (1.26: ~60 s)
    pids+=($!) names+=("$name")
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    rc=$?
    say "run ${names[$i]} exited with $rc$( (( rc == 124 )) && echo ': stopped at DEADLINE, before its end')"
done
for name in "${names[@]}"; do
    [[ -f /tmp/$name/trainable.safetensors ]] || continue
    python3 -c "from model.checkpoint import copy_checkpoint; copy_checkpoint('/tmp/$name', '/tmp/$name-float16')" || continue
    tar cf - -C /tmp "$name-float16" | split -b 15000000 -d - "$OUT/$name.tar."
done
ls -la "$OUT"
say "done"
