"""A confidence per caption in [0, 1]: the probability that it is right, calibrated on the val split.

"Right", on labelled data (`model.evaluation.grounding`): the caption names the image's
scene and its main object, and no other scene. The calibrator is a logistic regression
from what the model knows at serving time, followed by an isotonic map of its output
onto the share of right captions (Zadrozny and Elkan 2002): the regression ranks, the
map calibrates. On the demo val split the map cut the cross-validated ECE from 0.062
to 0.020 (docs/RESULTS.md, abstention). The inputs:

- ``caption_score``: the caption's length-normalised log-probability;
- ``ood_score``: the image's out-of-distribution score (`model.guidance.ood`);
- ``scene_probability``: the scene reader's probability of its top scene;
- ``names_read_scene`` / ``names_other_scene``: whether the caption uses one of the
  reader's words for that scene / for another scene (`model.guidance.scene_reader`).

The last three need a scene reader; without one, only the first two are fitted.
Where there are no labels (serving), the confidence means the same thing on faith: the
share of val captions with these inputs that were right. It holds as far as new posts
resemble the val split, which is what the OOD score watches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from model.errors import ModelError
from model.guidance.tagger import caption_words

BASE_INPUTS = ("caption_score", "ood_score")
SCENE_INPUTS = ("scene_probability", "names_read_scene", "names_other_scene")


class ConfidenceError(ModelError):
    """A calibrator that cannot be fitted or loaded; the message says why."""


def caption_inputs(
    texts: Sequence[str],
    scores: Sequence[float],
    ood_scores: Sequence[float],
    scene_probabilities: Tensor | None,
    scene_words: Sequence[Sequence[str]] | None,
) -> Tensor:
    """One row per caption: (N, 2) without a scene reader, (N, 5) with one; see the module docstring.

    `ood_scores` and `scene_probabilities` (N, S) are the caption's image's, repeated for each of its captions.
    """
    rows = []
    for i, (text, score, ood) in enumerate(zip(texts, scores, ood_scores, strict=True)):
        row = [float(score), float(ood)]
        if scene_probabilities is not None:
            probability, top = scene_probabilities[i].max(dim=-1)
            words = caption_words(text)
            other = {w for s, ws in enumerate(scene_words) if s != int(top) for w in ws}
            row += [float(probability), float(bool(words & set(scene_words[int(top)]))), float(bool(words & other))]
        rows.append(row)
    width = len(BASE_INPUTS) + (len(SCENE_INPUTS) if scene_probabilities is not None else 0)
    return torch.tensor(rows, dtype=torch.float32).reshape(len(rows), width)


class CaptionConfidence:
    """Standardised inputs -> logistic regression -> probability that the caption is right."""

    def __init__(
        self, inputs: Sequence[str], mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor,
        knots_x: Tensor = torch.tensor([0.0, 1.0]), knots_y: Tensor = torch.tensor([0.0, 1.0]),
    ) -> None:
        if tuple(inputs) not in (BASE_INPUTS, BASE_INPUTS + SCENE_INPUTS):
            raise ConfidenceError(f"inputs must be {BASE_INPUTS} or {BASE_INPUTS + SCENE_INPUTS}, got {tuple(inputs)}")
        if not (mean.shape == std.shape == weight.shape == (len(inputs),)) or bias.shape != (1,):
            raise ConfidenceError(f"mean, std and weight must have shape ({len(inputs)},) and bias (1,)")
        if knots_x.dim() != 1 or knots_x.shape != knots_y.shape or knots_x.numel() < 1 or bool((knots_x.diff() < 0).any()):
            raise ConfidenceError("knots_x and knots_y must be equal-length 1-d tensors, knots_x ascending")
        self.inputs = tuple(inputs)
        self.mean, self.std, self.weight, self.bias = mean.float(), std.float(), weight.float(), bias.float()
        self.knots_x, self.knots_y = knots_x.float(), knots_y.float().clamp(0, 1)  # the isotonic map, piecewise linear

    @property
    def uses_scene_reader(self) -> bool:
        return len(self.inputs) > len(BASE_INPUTS)

    def __call__(self, rows: Tensor) -> Tensor:  # (N, F) from caption_inputs -> (N,) in [0, 1]
        if rows.dim() != 2 or rows.size(1) != len(self.inputs):
            raise ConfidenceError(f"rows must be (N, {len(self.inputs)}), got {tuple(rows.shape)}")
        return self.calibrated(self.ranking(rows))

    def ranking(self, rows: Tensor) -> Tensor:  # (N, F) -> (N,): the logistic regression's probability
        return torch.sigmoid(((rows.float() - self.mean) / self.std) @ self.weight + self.bias)

    def calibrated(self, ranking: Tensor) -> Tensor:  # (N,) -> (N,): the isotonic map, flat beyond its ends
        if self.knots_x.numel() == 1:
            return self.knots_y.expand_as(ranking).clone()
        right = torch.searchsorted(self.knots_x, ranking.contiguous()).clamp(1, self.knots_x.numel() - 1)
        x0, x1, y0, y1 = self.knots_x[right - 1], self.knots_x[right], self.knots_y[right - 1], self.knots_y[right]
        share = ((ranking - x0) / (x1 - x0).clamp(min=1e-12)).clamp(0, 1)
        return y0 + share * (y1 - y0)

    def tensors(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std, "weight": self.weight, "bias": self.bias,
                "knots_x": self.knots_x, "knots_y": self.knots_y}

    @classmethod
    def from_tensors(cls, inputs: Sequence[str], tensors: dict[str, Tensor]) -> CaptionConfidence:
        return cls(inputs, tensors["mean"], tensors["std"], tensors["weight"], tensors["bias"], tensors["knots_x"], tensors["knots_y"])


def fit_confidence(rows: Tensor, right: Sequence[bool], inputs: Sequence[str], l2: float = 1.0) -> CaptionConfidence:
    """Fit the logistic regression on val captions' input rows and whether each was right, then the isotonic map of its output."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    labels = np.asarray(right, dtype=int)
    if rows.size(0) != len(labels) or len(set(labels.tolist())) < 2:
        raise ConfidenceError(f"need as many labels as rows ({rows.size(0)}) and both right and wrong captions to calibrate")
    mean, std = rows.mean(dim=0), rows.std(dim=0).clamp(min=1e-6)
    model = LogisticRegression(C=1.0 / l2, max_iter=1000).fit(((rows - mean) / std).numpy(), labels)
    ranked = CaptionConfidence(
        inputs, mean, std, torch.tensor(model.coef_[0], dtype=torch.float32), torch.tensor(model.intercept_, dtype=torch.float32)
    )
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(ranked.ranking(rows).numpy(), labels)
    return CaptionConfidence(
        inputs, ranked.mean, ranked.std, ranked.weight, ranked.bias,
        torch.tensor(isotonic.X_thresholds_, dtype=torch.float32), torch.tensor(isotonic.y_thresholds_, dtype=torch.float32),
    )


def expected_calibration_error(confidence: Sequence[float], right: Sequence[bool], bins: int = 10) -> float:
    """ECE: over equal-width confidence bins, the gap |accuracy - mean confidence| weighted by the bin's share."""
    confidence, right = np.asarray(confidence, dtype=float), np.asarray(right, dtype=float)
    if confidence.size == 0:
        raise ConfidenceError("expected_calibration_error needs at least one caption")
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(
        (which == b).mean() * abs(right[which == b].mean() - confidence[which == b].mean())
        for b in range(bins) if (which == b).any()
    ))
