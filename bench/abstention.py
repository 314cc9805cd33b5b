"""The abstention figures of a checkpoint's OOD file on a split whose captions are already decoded.

    .venv/bin/python -m bench.abstention --data DATA --checkpoint CKPT \
        --captions EVAL_TEST_JSON --ood-dir OOD_DIR [--cache-dir DIR] [--out FILE]

`uapt evaluate --ood-dir` gives the same figures but decodes the whole split first
(about 20 minutes on a CPU for the demo test split). This reads the split's n-best
captions from a `uapt evaluate --out` report of the same checkpoint and decoding, scores
them with the checkpoint's OOD file (`model.evaluation.abstention`), and decodes only the
OOD folder's images, as a new user's (no keywords), as evaluate does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.checkpoint import read_checkpoint_config
from model.config import DecodingOptions
from model.data.dataset import load_posts
from model.data.samples import train_profiles
from model.evaluation import grounding
from model.evaluation.abstention import abstention_figures, ood_set_figures
from model.evaluation.evaluate import IMAGE_SUFFIXES, EvalOptions, generate_captions
from model.evaluation.ood_set import read_kinds
from model.factory import load_model
from model.captioner import abstention_policy
from model.keywords import keywords_to_text
from model.training.features import FeatureCache, encode_split
from model.training.fit_ood import read_nbest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--captions", required=True, type=Path, help="a uapt evaluate --out report of the checkpoint")
    parser.add_argument("--ood-dir", required=True, type=Path)
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"))
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON (default: print them)")
    args = parser.parse_args(argv)

    report = json.loads(args.captions.read_text(encoding="utf-8"))
    nbest = read_nbest(args.captions)
    records = load_posts(args.data)
    model = load_model(read_checkpoint_config(args.checkpoint), checkpoint=args.checkpoint, device="cpu")
    if model.guidance.ood is None:
        sys.exit(f"{args.checkpoint} has no OOD file (uapt fit-ood)")
    cache = FeatureCache(args.cache_dir, model)
    split = encode_split(records, report["split"], 5, cache, train_profiles(records))
    samples = [s for s in split.samples if s.post_id in nbest]
    keep = [i for i, s in enumerate(split.samples) if s.post_id in nbest]
    posts = [nbest[s.post_id] for s in samples]
    labels = [s.labels for s in samples]
    policy = abstention_policy(model, None, None)
    ood, confidences = model.guidance.ood.scores(split.image_features[:][keep], posts, model.guidance.scene_reader)
    figures = abstention_figures(ood, confidences, [[t for t, _ in p] for p in posts], labels, policy)
    figures["all"] = grounding.content_scores([p[0][0] if p else "" for p in posts], labels)

    files = sorted(p for p in args.ood_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    features = cache.image_features(files)
    contexts = cache.context_features([keywords_to_text([])] * len(files))
    decoding = report["decoding"]
    options = EvalOptions(decoding=DecodingOptions(**decoding))  # the OOD images decode as the split's captions did
    out_nbest = generate_captions(model, features, contexts, options)
    out_ood, out_conf = model.guidance.ood.scores(features, [[(h.text, h.score) for h in hyps] for hyps in out_nbest], model.guidance.scene_reader)
    figures.update(ood_set_figures(ood, out_ood, [c[0] if c else None for c in out_conf], [f.name for f in files],
                                   read_kinds(args.ood_dir), policy))
    figures["ood_best_captions"] = {f.name: hyps[0].text if hyps else "" for f, hyps in zip(files, out_nbest)}
    figures.update(split=report["split"], posts=len(posts), captions_from=str(args.captions), decoding=decoding)
    text = json.dumps(figures, indent=1, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
