#!/usr/bin/env bash
# Device call 1 (docs/GPU.md): install the carried wheels, stash the LM's first part, unpack
# the keyword-text features and synthesize the data stage.sh was run on, checking it matches.
set -euo pipefail
source scripts/gpu/device_paths.sh
STAGE=.gpu-stage1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target $SITE $STAGE/wheels/*.whl
mkdir -p $STASH $CACHE
cp $STAGE/gguf.xz.0 $STASH/
tar xf $STAGE/contexts.tar -C $CACHE
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"
synth=$(python3 -c "import json, sys; print(' '.join(f'--{k.replace(\"_\", \"-\")} {v}' for k, v in json.load(sys.stdin).items()))" < $STAGE/synth.json)
echo "synth $synth"
python3 scripts/gpu/device_entry.py data synth --out $DATA $synth > /dev/null
(cd $DATA && sha256sum -c "$OLDPWD/$STAGE/posts.sha256")
