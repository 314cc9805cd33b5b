"""Encode every keyword text a training run on DATA will ask for, and tar those cache entries.

The GPU machine has no MiniLM (docs/GPU.md), so the context features travel: this
encodes them here with the real encoder into the feature cache, then packs the
`ctx-*.npy` entries with the cache's backbone id, ready to unpack under the
machine's `--cache-dir`.

    .venv/bin/python scripts/gpu/pack_contexts.py --data runs/data-u12-p500-s0 --out .gpu-stage2/contexts.tar
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

from model.data.dataset import load_posts
from model.data.samples import build_samples, train_profiles
from model.factory import load_model
from model.keywords import keywords_to_text
from model.training.features import BACKBONE_FILE, FeatureCache, context_key
from model.training.train_config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset folder the GPU run trains on")
    parser.add_argument("--out", type=Path, required=True, help="tar file to write")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"), help="(default: runs/feature-cache)")
    parser.add_argument("--keywords", type=int, default=TrainConfig().keywords_k, help="top-k keywords (default: training's)")
    args = parser.parse_args()

    records = load_posts(args.data)
    profiles = train_profiles(records)
    texts = {keywords_to_text([])}  # a new user's, for context dropout and cold start
    for split in ("train", "val", "test"):
        texts.update(s.context_text for s in build_samples(records, split, args.keywords, profiles))
    cache = FeatureCache(args.cache_dir, load_model("offline", device="cpu"))
    cache.context_features(sorted(texts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out, "w") as tar:
        tar.add(cache.dir / BACKBONE_FILE, arcname=f"{cache.dir.name}/{BACKBONE_FILE}")
        for text in sorted(texts):
            name = f"{context_key(text)}.npy"
            tar.add(cache.dir / name, arcname=f"{cache.dir.name}/{name}")
    print(f"packed {len(texts)} keyword texts of {args.data} into {args.out}")


if __name__ == "__main__":
    main()
