"""A tiny model's OOD file, built by hand so that tests choose what it scores and decides (model and worker tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from model.checkpoint import save_checkpoint
from model.guidance.abstention import AbstentionPolicy
from model.guidance.confidence import BASE_INPUTS, CaptionConfidence
from model.guidance.ood import OODFit, OODGuard, fit_ood_scorer, save_ood

FIT = OODFit(dims=4, k=2)


def fitting_images(count: int = 12) -> list[Image.Image]:
    """The images the hand-built scorer is fitted on: small, of different sizes and colours."""
    return [Image.new("RGB", (24 + 5 * i, 30 + 3 * i), ((41 * i) % 256, (89 * i + 30) % 256, (23 * i + 120) % 256)) for i in range(count)]


def tiny_guard(model, max_ood_score: float = 10.0, min_confidence: float = 0.0) -> OODGuard:
    """Scorer fitted on `fitting_images`; confidence = sigmoid(caption score - OOD score), so a surer caption is more confident."""
    features = model.encode_images(fitting_images())
    scorer = fit_ood_scorer(features, FIT)
    confidence = CaptionConfidence(BASE_INPUTS, torch.zeros(2), torch.ones(2), torch.tensor([1.0, -1.0]), torch.zeros(1))
    return OODGuard(scorer, confidence, AbstentionPolicy(max_ood_score, min_confidence), model.backbone_id(), tuple(features.shape[1:]))


def checkpoint_with_ood(model, directory: Path, max_ood_score: float = 10.0, min_confidence: float = 0.0) -> Path:
    """A checkpoint of `model` with an OOD file whose default thresholds are the given ones."""
    save_checkpoint(model, directory)
    save_ood(tiny_guard(model, max_ood_score, min_confidence), directory, FIT, {})
    return directory
