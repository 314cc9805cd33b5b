# The demo recipe (docs/RESULTS.md, "How it was trained"), sourced by train_demo.sh and table3.sh so that both
# train and fit alike. Not run on its own.
# shellcheck shell=bash disable=SC2034
DEMO_BATCH=16
# the prefix networks: 10 epochs at batch 16, peak lr 3e-4, context dropout 0.3, the image path at 3x the lr
DEMO_TRAIN=(--epochs 10 --batch-size "$DEMO_BATCH" --lr 3e-4 --context-dropout 0.3 --visual-lr-scale 3)
# the image-word tagger: weight 2 chosen on val, three bands of the feature grid, the plausibility gate at 0.1
DEMO_TAGGER=(--weight 2 --bands 3 --plausibility 0.1)
