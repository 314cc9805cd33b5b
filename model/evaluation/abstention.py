"""How well a checkpoint knows when not to suggest: the figures `uapt evaluate` adds with an OOD file.

- ``ood_auroc`` and ``ood_fpr95``: the OOD score separating the split's images (in
  distribution) from a folder of images the model should refuse (`model.evaluation.ood_set`);
  fpr95 is the share of those images scored at or below the score that keeps 95% of the
  split's images.
- ``ece``: expected calibration error of the caption confidence (`model.guidance.confidence`)
  over every n-best caption of the gradable posts, against whether it is right.
- ``coverage``: the share of the split's posts whose captions are shown at the thresholds.
- ``selective``: content_scene, content_object and wrong_scene_rate over the shown posts' best captions
  (compare with the same figures over all posts).
- ``risk_coverage``: for each confidence threshold, (coverage, risk = share of shown gradable
  posts whose best caption is not right): the curve the HTML report draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from model.evaluation import grounding
from model.guidance.abstention import OUT_OF_DISTRIBUTION, AbstentionPolicy
from model.guidance.confidence import expected_calibration_error


def caption_is_right(text: str, labels: Mapping[str, Any]) -> bool:
    """Names the image's scene and main object, and no other scene."""
    return grounding.names_scene(text, labels) and grounding.names_main_object(text, labels) and not grounding.names_wrong_scene(text, labels)


def ood_separation(in_scores: Sequence[float], out_scores: Sequence[float]) -> dict[str, float]:
    """AUROC (OOD images as positives, higher score = more OOD) and FPR at 95% in-distribution kept."""
    from sklearn.metrics import roc_auc_score

    inside, outside = np.asarray(in_scores, dtype=float), np.asarray(out_scores, dtype=float)
    labels = np.r_[np.zeros(inside.size), np.ones(outside.size)]
    threshold = np.quantile(inside, 0.95)
    return {"ood_auroc": float(roc_auc_score(labels, np.r_[inside, outside])), "ood_fpr95": float((outside <= threshold).mean())}


def risk_coverage(confidence: Sequence[float], right: Sequence[bool], points: int = 21) -> list[list[float]]:
    """[coverage, risk] for the posts kept at each confidence threshold, from keeping all to keeping the surest."""
    confidence, right = np.asarray(confidence, dtype=float), np.asarray(right, dtype=bool)
    curve = []
    for threshold in np.quantile(confidence, np.linspace(0, 1, points, endpoint=False)) if confidence.size else []:
        kept = confidence >= threshold
        curve.append([round(float(kept.mean()), 4), round(float(1 - right[kept].mean()), 4)])
    return curve


def abstention_figures(
    ood_scores: Sequence[float],
    confidences: Sequence[Sequence[float]],
    nbest_texts: Sequence[Sequence[str]],
    labels: Sequence[Mapping[str, Any] | None],
    policy: AbstentionPolicy,
) -> dict[str, Any]:
    """ece, coverage, selective and risk_coverage of one split's posts (their images' OOD scores, captions' confidences)."""
    best_texts = [texts[0] if texts else "" for texts in nbest_texts]
    best_confidence = [c[0] if c else None for c in confidences]
    reasons = [policy.reason(o, c) for o, c in zip(ood_scores, best_confidence)]
    kept = [r is None for r in reasons]
    gradable = [i for i, l in enumerate(labels) if grounding.is_gradable(l) and nbest_texts[i]]
    right_all = [caption_is_right(t, labels[i]) for i in gradable for t in nbest_texts[i]]
    confidence_all = [c for i in gradable for c in confidences[i]]
    right_best = [caption_is_right(best_texts[i], labels[i]) for i in gradable]
    shown = [i for i, k in enumerate(kept) if k]
    return {
        "thresholds": {"max_ood_score": policy.max_ood_score, "min_confidence": policy.min_confidence},
        "ece": expected_calibration_error(confidence_all, right_all) if gradable else None,
        "ece_best_caption": expected_calibration_error([best_confidence[i] for i in gradable], right_best) if gradable else None,
        "coverage": sum(kept) / len(kept),
        "abstained": {reason: reasons.count(reason) for reason in sorted({r for r in reasons if r})},
        "selective": {**grounding.content_scores([best_texts[i] for i in shown], [labels[i] for i in shown]), "posts": len(shown)},
        "risk_coverage": risk_coverage([best_confidence[i] for i in gradable], right_best),
    }


def ood_set_figures(
    in_scores: Sequence[float], out_scores: Sequence[float], out_confidence: Sequence[float | None],
    names: Sequence[str], kinds: Mapping[str, str], policy: AbstentionPolicy,
) -> dict[str, Any]:
    """ood_auroc, ood_fpr95, and per kind of OOD image how many are abstained at the thresholds (and for the OOD score)."""
    reasons = [policy.reason(o, c) for o, c in zip(out_scores, out_confidence)]
    by_kind: dict[str, dict[str, int]] = {}
    for name, reason in zip(names, reasons):
        counts = by_kind.setdefault(kinds.get(name, "unknown"), {"images": 0, "abstained": 0, OUT_OF_DISTRIBUTION: 0})
        counts["images"] += 1
        counts["abstained"] += reason is not None
        counts[OUT_OF_DISTRIBUTION] += reason == OUT_OF_DISTRIBUTION
    return {
        **ood_separation(in_scores, out_scores),
        "ood_images": len(out_scores),
        "ood_abstained": sum(r is not None for r in reasons) / max(len(reasons), 1),
        "ood_by_kind": by_kind,
        "ood_scores": {name: round(score, 4) for name, score in zip(names, out_scores)},
    }
