"""How well could a caption name the scene and object? A linear probe on the frozen image features.

    .venv/bin/python scripts/scene_probe.py --data runs/data-u12-p500-s0

Fits a logistic regression per label (the scene, the main object, the drawn
shape and its colour) on the mean-pooled image features of the dataset's train
posts, and scores it on the val posts: the share a classifier that sees only the
image gets right. The captions issue asks the model for content_scene >= 0.80;
this is the image's side of that ceiling (the reference captions' side is how
often the users name the scene at all, printed beside it). Shape and colour are
the image's side of distinct_per_user (scripts/distinct_bound.py: how distinct
captions fixed by these labels can be). Features come from the training feature cache, so
after `uapt train` on the same data nothing is encoded again. The labels are
`uapt data synth`'s (a photographed object, then one drawn shape).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data.dataset import load_posts  # noqa: E402
from model.evaluation.grounding import is_gradable, names_scene  # noqa: E402
from model.factory import load_model  # noqa: E402
from model.training.features import FeatureCache  # noqa: E402


def pooled_features(records, cache: FeatureCache) -> np.ndarray:
    """One vector per post: its image's grid features averaged over the grid."""
    return cache.image_features([r.image for r in records]).mean(dim=1).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a dataset with labels (uapt data synth)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"), help="the training feature cache")
    args = parser.parse_args()

    records = [r for r in load_posts(args.data) if r.labels]
    train = [r for r in records if r.split == "train"]
    val = [r for r in records if r.split == "val"]
    if not train or not val:
        raise SystemExit("scene_probe: the dataset needs labelled train and val posts")
    cache = FeatureCache(args.cache_dir, load_model("offline", device="cpu"))
    x_train, x_val = pooled_features(train, cache), pooled_features(val, cache)
    targets = {
        "scene": lambda labels: labels["scene"],
        "object": lambda labels: labels["objects"][0],
        "shape": lambda labels: labels["objects"][1],
        "colour": lambda labels: labels["colours"][0],
    }
    for name, target in targets.items():
        classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
        classifier.fit(x_train, [target(r.labels) for r in train])
        truth = np.array([target(r.labels) for r in val])
        predicted = classifier.predict(x_val)
        per_class = ", ".join(f"{c} {np.mean(predicted[truth == c] == c):.2f}" for c in sorted(set(truth)))
        print(f"{name}: {np.mean(predicted == truth):.3f} of {len(val)} val images ({per_class})")
    gradable = [r for r in val if is_gradable(r.labels)]
    named = np.mean([names_scene(r.text, r.labels) for r in gradable])
    print(f"the users' own val captions name the true scene: {named:.3f} of {len(gradable)} gradable posts")


if __name__ == "__main__":
    main()
