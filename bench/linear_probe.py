"""Benchmark: what a frozen image encoder keeps of the synthetic images, by linear probe.

    .venv/bin/python -m bench.linear_probe --images 600

Draws seeded synthetic images (model.data.synth: a scene, a pasted real photo,
drawn shapes) with their labels, encodes them with the offline preset's image
encoder, averages the grid to one vector per image, and fits a logistic
regression per label on 75% of the images; prints the accuracy on the other 25%.
The baseline, in the same run, is the same architecture with random weights.
The last line is machine-readable:

    pretrained_object=<acc> random_object=<acc> ... (one pair per label)
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from model.config import get_config
from model.data.synth import draw_content, draw_image, draw_style
from model.encoders import build_encoders

LABELS = ("scene", "colour", "shape", "count", "object")


def synthetic_probe_set(count: int, seed: int) -> tuple[list, dict[str, list]]:
    """Images and their labels, drawn as `uapt data synth` draws them (one style per 20 images)."""
    rng = random.Random(seed)
    images, labels = [], {name: [] for name in LABELS}
    style = draw_style(rng, "probe")
    for i in range(count):
        if i % 20 == 0:
            style = draw_style(rng, f"probe{i}")
        content = draw_content(rng, style)
        images.append(draw_image(rng, content))
        for name, value in zip(LABELS, (content.scene, content.colour, content.shape, content.count, content.obj)):
            labels[name].append(value)
    return images, labels


def encode(images: Sequence, pretrained: bool, batch: int = 50) -> np.ndarray:
    config = get_config("offline")
    if not pretrained:
        config = replace(config, image_pretrained=None)
    encoder, _ = build_encoders(config)
    encoder.eval()
    chunks = [encoder(images[i : i + batch]).mean(dim=1) for i in range(0, len(images), batch)]  # (B, 1280)
    return torch.cat(chunks).numpy()


def probe(features: np.ndarray, targets: Sequence, train: int) -> float:
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    classifier.fit(features[:train], targets[:train])
    return float(classifier.score(features[train:], targets[train:]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.linear_probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600, help="synthetic images drawn (default: 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the images (default: 0)")
    args = parser.parse_args(argv)
    images, labels = synthetic_probe_set(args.images, args.seed)
    train = int(0.75 * len(images))
    results: dict[str, dict[str, float]] = {}
    for name, pretrained in (("pretrained", True), ("random", False)):
        started = time.perf_counter()
        features = encode(images, pretrained)
        results[name] = {label: probe(features, labels[label], train) for label in LABELS}
        print(f"{name}: encoded {len(images)} images in {time.perf_counter() - started:.1f} s")
    chance = {label: 1 / len(set(labels[label])) for label in LABELS}
    print("| encoder (EfficientNet-Lite0, mean of the 7x7 grid) | " + " | ".join(LABELS) + " |")
    print("| --- |" + " --- |" * len(LABELS))
    for name in results:
        print(f"| {name} | " + " | ".join(f"{results[name][label]:.2f}" for label in LABELS) + " |")
    print("| chance | " + " | ".join(f"{chance[label]:.2f}" for label in LABELS) + " |")
    print(" ".join(f"{name}_{label}={results[name][label]:.3f}" for name in results for label in LABELS))


if __name__ == "__main__":
    main()
