#!/usr/bin/env bash
# Retrain the committed demo checkpoint (checkpoints/demo-offline) from scratch, at HEAD.
# docs/RESULTS.md (shipped checkpoint) has the figures and the time this takes.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/recipe.sh
UAPT=.venv/bin/uapt
DATA=runs/data-u12-p500-s0
RUN=runs/demo-offline
[[ -f $DATA/posts.jsonl ]] || $UAPT data synth --out "$DATA" --users 12 --posts-per-user 500 --seed 0
# resumable: rerun this script after an interruption and it goes on from the last checkpoint
resume=()
[[ -f $RUN/train_state.json ]] && resume=(--resume "$RUN")
# bfloat16 because the committed checkpoint was trained so: on an AMD EPYC its first 80 losses came out bit for bit;
# on an AVX2-only CPU it is several times slower than float32
$UAPT train --data "$DATA" --preset offline "${DEMO_TRAIN[@]}" --eval-every 300 --precision bfloat16 --out "$RUN" "${resume[@]}"
.venv/bin/python -c "from model.checkpoint import copy_checkpoint; copy_checkpoint('$RUN', 'checkpoints/demo-offline')"
# the image-word tagger that steers decoding (its settings: scripts/recipe.sh); a minute or two
$UAPT fit-image-words --data "$DATA" --checkpoint checkpoints/demo-offline "${DEMO_TAGGER[@]}"
# the scene reader whose words beam search requires where it is sure of the scene; a minute
$UAPT fit-scene-reader --data "$DATA" --checkpoint checkpoints/demo-offline
# the OOD score and caption confidence with which the worker abstains, calibrated on the val split's captions
$UAPT evaluate --data "$DATA" --checkpoint checkpoints/demo-offline --split val --out "$RUN/eval-val.json"
$UAPT fit-ood --data "$DATA" --checkpoint checkpoints/demo-offline --val-captions "$RUN/eval-val.json"
$UAPT evaluate --data "$DATA" --checkpoint checkpoints/demo-offline --out "$RUN/eval-test.json" \
    --report "$RUN/report.html"
