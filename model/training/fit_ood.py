"""Fit a checkpoint's OOD file (`model.guidance.ood`): the scorer on the train split, the confidence on val.

The scorer needs only the train images' frozen features (from the feature cache). The
confidence needs val captions and the val split's labels: it is calibrated against
whether each caption is right (`model.guidance.confidence`). The captions are a
``uapt evaluate --split val`` report's n-best lists when one is given (decoding the
whole val split takes about 20 minutes on a CPU), else the first `calibration_posts`
val posts are decoded here.

The default thresholds are chosen on val: ``max_ood_score`` is a high quantile of the val
images' OOD scores (about 1 in 100 in-distribution images abstained for it, with no
OOD images needed to choose it), and ``min_confidence`` is 0.5: a caption is shown when
the calibrated confidence says it is more likely right than wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from model.data.dataset import PostRecord
from model.errors import ModelError
from model.evaluation import grounding
from model.evaluation.abstention import caption_is_right
from model.guidance.abstention import AbstentionPolicy
from model.guidance.confidence import (
    BASE_INPUTS,
    SCENE_INPUTS,
    caption_inputs,
    expected_calibration_error,
    fit_confidence,
)
from model.guidance.ood import OODError, OODFit, OODGuard, fit_ood_scorer, save_ood
from model.training.features import Split
from model.training.features import checkpoint_splits

logger = logging.getLogger(__name__)

NBest = list[list[tuple[str, float]]]  # per post, its captions' (text, score), best first


def read_nbest(eval_json: str | Path) -> dict[str, list[tuple[str, float]]]:
    """post_id -> n-best (text, score), from a ``uapt evaluate --out`` report."""
    try:
        posts = json.loads(Path(eval_json).read_text(encoding="utf-8"))["captions"]
        return {p["post_id"]: [(h["text"], float(h["score"])) for h in p["nbest"]] for p in posts}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise OODError(f"val_captions: {eval_json} is not a uapt evaluate report: {error}") from None


@dataclass(frozen=True)
class Calibration:
    """The val posts the confidence is fitted on: their features, n-best captions and labels."""

    image_features: torch.Tensor  # (N, T, D)
    nbest: NBest
    labels: list[dict]


def decode_nbest(model, split: Split, limit: int, batch_size: int = 16) -> NBest:
    """The n-best captions of the first `limit` posts of `split`, with the model's default decoding."""
    nbest: NBest = []
    for start in range(0, min(limit, len(split.samples)), batch_size):
        stop = min(start + batch_size, limit)
        for captions in model.generate(split.image_features[start:stop], split.context_features[start:stop]):
            nbest.append([(c.text, c.score) for c in captions])
    return nbest


def calibration_set(model, val: Split, val_captions: dict[str, list[tuple[str, float]]] | None, limit: int) -> Calibration:
    """The gradable val posts (labels, on-topic user) with their captions, read from `val_captions` or decoded."""
    if val_captions is not None:
        missing = [s.post_id for s in val.samples if s.post_id not in val_captions]
        if missing:
            raise OODError(f"val_captions has no captions for {len(missing)} val posts (first: {missing[0]})")
        nbest = [val_captions[s.post_id] for s in val.samples]
    else:
        nbest = decode_nbest(model, val, limit)
    keep = [i for i, s in enumerate(val.samples[: len(nbest)]) if grounding.is_gradable(s.labels) and nbest[i]]
    if not keep:
        raise OODError("calibrating the confidence needs val posts with scene and object labels (docs/DATASET.md)")
    return Calibration(val.image_features[:][keep], [nbest[i] for i in keep], [val.samples[i].labels for i in keep])


def fit_guard(model, train: Split, val: Split, calibration: Calibration, fit: OODFit = OODFit()) -> tuple[OODGuard, dict]:
    """Fit the scorer on `train`, the default OOD threshold on `val`'s scores, the confidence on `calibration`."""
    train_features = train.image_features[:]  # a tensor, whether the split holds one or a view of a feature store
    scorer = fit_ood_scorer(train_features, fit)
    with torch.no_grad():
        val_scores = scorer(val.image_features[:])
    max_ood_score = float(torch.quantile(val_scores, fit.val_quantile))
    reader = model.guidance.scene_reader
    inputs = BASE_INPUTS + (SCENE_INPUTS if reader is not None else ())
    image_of = [i for i, captions in enumerate(calibration.nbest) for _ in captions]
    with torch.no_grad():
        cal_scores = scorer(calibration.image_features).tolist()
        probabilities = None if reader is None else reader(calibration.image_features).float().cpu()[image_of]
    rows = caption_inputs(
        [text for captions in calibration.nbest for text, _ in captions],
        [score for captions in calibration.nbest for _, score in captions],
        [cal_scores[i] for i in image_of],
        probabilities,
        None if reader is None else reader.words,
    )
    right = [caption_is_right(text, calibration.labels[i]) for i, (text, _) in zip(image_of, (c for cs in calibration.nbest for c in cs))]
    confidence = fit_confidence(rows, right, inputs)
    policy = AbstentionPolicy(max_ood_score, fit.min_confidence)
    guard = OODGuard(scorer, confidence, policy, model.backbone_id(), tuple(train_features.shape[1:]))
    fitted = confidence(rows).tolist()
    best = [sum(len(c) for c in calibration.nbest[:i]) for i in range(len(calibration.nbest))]  # row of each post's best caption
    kept = [policy.reason(cal_scores[i], fitted[row]) is None for i, row in enumerate(best)]
    figures = {
        "train_images": train_features.size(0),
        "val_images": val_scores.numel(),
        "val_ood_score_quantiles": {q: float(torch.quantile(val_scores, q)) for q in (0.5, 0.9, 0.99, 1.0)},
        "calibration_posts": len(calibration.nbest),
        "calibration_captions": len(right),
        "val_right_share": sum(right) / len(right),
        "val_ece_in_sample": expected_calibration_error(fitted, right),
        "val_best_caption_coverage": sum(kept) / len(kept),
        "val_best_caption_right_kept": sum(right[row] for row, k in zip(best, kept) if k) / max(sum(kept), 1),
        "val_best_caption_right_all": sum(right[row] for row in best) / len(best),
        "confidence_weights": dict(zip(inputs, confidence.weight.tolist())),
    }
    return guard, figures


def fit_checkpoint_ood(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    fit: OODFit = OODFit(),
    *,
    val_captions: str | Path | None = None,
    calibration_posts: int = 300,
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
) -> dict:
    """Fit the OOD file for an existing checkpoint and save it there; returns its fit figures."""
    model, train, val = checkpoint_splits(records, checkpoint, cache_dir, device)
    if not val.samples:
        raise OODError("the dataset has no val posts: the thresholds and the confidence are chosen on val")
    captions = read_nbest(val_captions) if val_captions is not None else None
    guard, figures = fit_guard(model, train, val, calibration_set(model, val, captions, calibration_posts), fit)
    save_ood(guard, checkpoint, fit, figures)
    logger.info("OOD scorer fitted on %d train images, confidence on %d val captions, saved in %s",
                figures["train_images"], figures["calibration_captions"], checkpoint)
    return figures


def fit_after_training(model, train: Split, val: Split, out_dir: str | Path, calibration_posts: int = 300) -> None:
    """What `uapt train` does at the end of a run: fit and save the OOD file, or say why it could not."""
    model.eval()  # no dropout while decoding the calibration captions
    try:
        guard, figures = fit_guard(model, train, val, calibration_set(model, val, None, calibration_posts))
    except ModelError as error:  # e.g. no labels, or no caption right or none wrong to calibrate on
        logger.warning("no OOD file for %s: %s (uapt fit-ood fits one later)", out_dir, error)
        return
    save_ood(guard, out_dir, OODFit(), figures)
