"""How an image-word tagger is fitted, and what a guidance weight may be; free of torch imports.

Kept apart from `model.guidance.tagger` (as `model.training.train_config` is from the trainer)
so that the CLI can show the defaults in ``--help`` without importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from model.errors import ModelError


BARE_FORMS = ("everywhere", "first-word", "never")  # where a word's form without a leading space is steered


class ImageWordsError(ModelError):
    """An image-word tagger that cannot be fitted or loaded; the message says why."""


@dataclass(frozen=True)
class TaggerFit:
    """How the tagger is fitted: full-batch Adam on an L2-penalised logistic read-out, one output per word.

    The penalty matters: every train image is unique and most caption words are chance
    draws, so an unpenalised read-out learns the train captions by heart (its val
    cross-entropy ends above that of the word priors alone).
    """

    min_count: int = 10  # a word enters the vocabulary when this many train captions use it
    bands: int = 1  # horizontal bands of the feature grid read beside the image's mean (1: the mean alone)
    steps: int = 400
    lr: float = 1e-2
    # times the squared weights, summed, added to the mean cross-entropy; with several values one
    # read-out is fitted per value and each word keeps the one with its lowest val cross-entropy
    # (each word is its own logistic model: image words bear a weaker penalty than style words)
    l2: tuple[float, ...] = (1e-3,)
    pmi_cap: float = 3.0  # |log-ratio| limit: one confident read-out must not veto a word outright
    min_val_gain: float = 0.0  # steer only words whose val cross-entropy is this share below their prior's (0: all)
    weight: float = 1.0  # the default guidance weight stored with the tagger (0 turns guidance off)
    plausibility: float = 0.0  # guidance moves only tokens the LM finds this likely relative to its top one (0: all)
    # where "word" (no leading space) is steered beside " word": it is the caption's first word,
    # but also what follows "#" and what ends some longer words (docs/RESULTS.md)
    bare_form: str = "everywhere"

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.steps < 1 or self.bands < 1:
            raise ImageWordsError(
                f"min_count, steps and bands must be >= 1, got {self.min_count}, {self.steps} and {self.bands}"
            )
        penalties = (self.l2,) if isinstance(self.l2, (int, float)) else self.l2  # one may be given as a number
        object.__setattr__(self, "l2", tuple(float(penalty) for penalty in penalties))
        if not (self.lr > 0 and self.pmi_cap > 0 and self.l2 and min(self.l2) >= 0):
            raise ImageWordsError(
                f"lr and pmi_cap must be > 0 and l2 one or more values >= 0, got {self.lr}, {self.pmi_cap}, {self.l2}"
            )
        if len(set(self.l2)) != len(self.l2):
            raise ImageWordsError(f"each l2 penalty may be given once, got {self.l2}")
        if not 0 <= self.min_val_gain < 1:
            raise ImageWordsError(f"min_val_gain must be in [0, 1), got {self.min_val_gain}")
        check_bare_form(self.bare_form)
        check_weight(self.weight)
        check_plausibility(self.plausibility)


def check_bare_form(bare_form: str) -> str:
    """Where a word's bare form is steered must be one of `BARE_FORMS`; returns it."""
    if bare_form not in BARE_FORMS:
        raise ImageWordsError(f"bare_form must be one of {', '.join(BARE_FORMS)}, got {bare_form!r}")
    return bare_form


def check_plausibility(plausibility: float, name: str = "plausibility") -> float:
    """A plausibility gate is a share of the top token's probability in [0, 1) (0: no gate); returns it."""
    if not 0.0 <= plausibility < 1.0:
        raise ImageWordsError(f"{name} must be in [0, 1) (0 turns the gate off), got {plausibility}")
    return plausibility


def check_weight(weight: float) -> float:
    """A guidance weight must be a finite number >= 0 (0 turns guidance off); returns it."""
    if not (math.isfinite(weight) and weight >= 0):
        raise ImageWordsError(f"image_word_weight must be a finite number >= 0 (0 turns guidance off), got {weight}")
    return weight
