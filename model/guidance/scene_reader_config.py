"""How a scene reader (`model.guidance.scene_reader`) is fitted; free of torch imports, so ``--help`` can show the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from model.errors import ModelError


class SceneReaderError(ModelError):
    """A scene reader that cannot be fitted or loaded; the message says why."""


@dataclass(frozen=True)
class SceneReaderFit:
    """Full-batch Adam on an L2-penalised softmax read-out of the pooled image features, one output per scene."""

    bands: int = 3  # horizontal bands of the feature grid read beside the image's mean, as the tagger's
    steps: int = 400
    lr: float = 1e-2
    l2: float = 1e-3  # times the squared weights, summed, added to the mean cross-entropy
    min_count: int = 10  # a caption word can name a scene when this many train captions use it
    purity: float = 0.9  # ... and at least this share of them show that scene
    # decoding requires the scene's words only where the reader gives the scene at least this probability;
    # 0.7 is the smallest threshold at which the demo reader's top scene was right in at least 0.97 of the val
    # images above it (0.988 there; docs/RESULTS.md)
    min_confidence: float = 0.7

    def __post_init__(self) -> None:
        if self.bands < 1 or self.steps < 1 or self.min_count < 1:
            raise SceneReaderError(f"bands, steps and min_count must be >= 1, got {self.bands}, {self.steps}, {self.min_count}")
        if not (self.lr > 0 and self.l2 >= 0 and 0.5 < self.purity <= 1):
            raise SceneReaderError(f"lr must be > 0, l2 >= 0 and purity in (0.5, 1], got {self.lr}, {self.l2}, {self.purity}")
        check_min_confidence(self.min_confidence)


def check_min_confidence(min_confidence: float) -> float:
    """A threshold on the top scene's probability, in [0, 1]; 1 requires a scene only where the reader is certain."""
    if not 0.0 <= min_confidence <= 1.0:
        raise SceneReaderError(f"min_confidence must be in [0, 1], got {min_confidence}")
    return min_confidence
