"""When to withhold a post's captions: the two thresholds and the rule that applies them.

Free of torch, so the worker's settings and ``--help`` can import it. The scores come
from `model.guidance.ood` (how unlike the training images the image is) and
`model.guidance.confidence` (how likely the best caption is right).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.errors import ModelError

OUT_OF_DISTRIBUTION = "out_of_distribution"
LOW_CONFIDENCE = "low_confidence"
REASONS = (OUT_OF_DISTRIBUTION, LOW_CONFIDENCE)


class AbstentionError(ModelError):
    """A threshold out of range; the message names it."""


def check_max_ood_score(value: float) -> float:
    """An OOD-score ceiling: a number, or inf to never abstain for it."""
    if math.isnan(value):
        raise AbstentionError("max_ood_score must be a number (inf turns it off), got nan")
    return float(value)


def check_min_confidence(value: float) -> float:
    """A confidence floor in [0, 1]; 0 never abstains for it."""
    if not 0.0 <= value <= 1.0:
        raise AbstentionError(f"min_confidence must be in [0, 1], got {value}")
    return float(value)


@dataclass(frozen=True)
class AbstentionPolicy:
    """Withhold a post when its image's OOD score is above `max_ood_score`, else when its best caption's confidence is below `min_confidence`."""

    max_ood_score: float
    min_confidence: float

    def __post_init__(self) -> None:
        check_max_ood_score(self.max_ood_score)
        check_min_confidence(self.min_confidence)

    def reason(self, ood_score: float | None, confidence: float | None) -> str | None:
        """The reason to abstain, or None to show the captions; a missing score never causes an abstention."""
        if ood_score is not None and ood_score > self.max_ood_score:
            return OUT_OF_DISTRIBUTION
        if confidence is not None and confidence < self.min_confidence:
            return LOW_CONFIDENCE
        return None


@dataclass(frozen=True)
class Judgement:
    """One image's scores and the decision: `reason` None means its captions are shown."""

    ood_score: float | None  # None: the checkpoint has no OOD file
    confidence: float | None  # of the best caption; None: no calibrator, or no caption
    reason: str | None = None

    @property
    def abstained(self) -> bool:
        return self.reason is not None
