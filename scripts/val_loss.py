"""The val loss and image reliance of checkpoints, measured on this machine with its own features.

    .venv/bin/python scripts/val_loss.py --data runs/data-u12-p500-s0 \
        --checkpoint checkpoints/demo-offline runs/A-float16 runs/B-float16

A run's metrics.json holds the val loss its own machine measured, on the image features
that machine encoded and in the LM dtype it trained in. Scoring every checkpoint here, on
the same features, in one dtype, tells whether a gap between two runs lives in their
weights, or in where they were measured (a GPU run scored on CPU features, for instance).
The figures are the trainer's own (`evaluate_loss`, `image_reliance`), with float32 weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from model.data.dataset import load_posts  # noqa: E402
from model.data.samples import train_profiles  # noqa: E402
from model.evaluation.evaluate import trained_keywords_k  # noqa: E402
from model.factory import load_model  # noqa: E402
from model.training.features import FeatureCache, encode_split  # noqa: E402
from model.training.trainer import evaluate_loss, image_reliance  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the dataset the checkpoints were trained on")
    parser.add_argument("--checkpoint", type=Path, nargs="+", required=True, help="checkpoint folders to score")
    parser.add_argument("--split", default="val", help="split to score (default: val)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"), help="feature cache (default: runs/feature-cache)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size (default: 16, the demo recipe's)")
    args = parser.parse_args()
    records = load_posts(args.data)
    profiles = train_profiles(records)
    device = torch.device("cpu")
    for checkpoint in args.checkpoint:
        start = time.perf_counter()
        model = load_model(None, checkpoint=checkpoint, device="cpu", dtype="float32")
        split = encode_split(records, args.split, trained_keywords_k(checkpoint), FeatureCache(args.cache_dir, model), profiles)
        loss = evaluate_loss(model, split, args.batch_size, device)
        reliance = image_reliance(model, split, args.batch_size, device, loss)
        print(json.dumps({"checkpoint": str(checkpoint), "split": args.split, "posts": len(split.samples),
                          "loss": round(loss, 4), "image_reliance": round(reliance, 4),
                          "seconds": round(time.perf_counter() - start, 1)}), flush=True)


if __name__ == "__main__":
    main()
