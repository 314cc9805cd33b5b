"""Out-of-distribution score: how unlike the training images an image's frozen features are.

Why: the prefix networks only ever saw the synthetic scenes, so on a real photo the
caption is fluent nonsense with a beam score in the usual range; the score alone cannot
tell. The frozen ImageNet features can: a photo of a cameraman lies far from every
training image in feature space.

The score is the cosine distance from an image's mean-pooled features to its k-th
nearest train image (Sun et al. 2022, "Out-of-distribution detection with deep
nearest neighbors"), in a PCA space of the train features so that the stored bank stays
small (float16). Higher is more unusual; 0 is a copy of a train image. Exact search is one
(B, N) matrix product at a few thousand train images, so no index library is needed.

The fitted scorer lives beside a checkpoint's weights as the read-out ``ood``
(`model.guidance.storage`: ``ood.safetensors`` and ``ood.json`` with its checksum), with the caption confidence calibrated
on the val split (`model.guidance.confidence`) and the default abstention thresholds
(`model.guidance.abstention`). It is refused when damaged or when it was fitted on
another backbone or feature shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.errors import ModelError
from model.guidance.abstention import AbstentionPolicy
from model.guidance.confidence import CaptionConfidence, caption_inputs
from model.guidance.ood_config import OODError, OODFit
from model.guidance.storage import load_readout, readout_files, save_readout

if TYPE_CHECKING:
    from model.guidance.scene_reader import SceneReader

__all__ = ["NAME", "OODError", "OODFit", "OODGuard", "OODScorer", "fit_ood_scorer", "load_ood", "save_ood"]

NAME = "ood"  # the read-out's name in a checkpoint's folder
FORMAT = "uapt-ood/1"


class OODScorer(nn.Module):
    """Frozen image features (B, T, D) -> (B,) cosine distance to the k-th nearest train image, float32."""

    def __init__(self, image_dim: int, dims: int, bank_size: int, k: int) -> None:
        super().__init__()
        if not 1 <= k <= bank_size:
            raise OODError(f"k must be in [1, {bank_size}] (the train images kept), got {k}")
        self.image_dim, self.dims, self.k = image_dim, dims, k
        self.register_buffer("feature_mean", torch.zeros(image_dim))
        self.register_buffer("components", torch.zeros(image_dim, dims))
        self.register_buffer("bank", torch.zeros(bank_size, dims, dtype=torch.float16))  # unit rows

    def embed(self, image_features: Tensor) -> Tensor:  # (B, T, D) -> (B, dims), unit rows, float32 whatever the model's dtype
        pooled = image_features.float().mean(dim=1)
        return F.normalize((pooled - self.feature_mean.float()) @ self.components.float(), dim=-1)

    def forward(self, image_features: Tensor) -> Tensor:  # (B, T, D) -> (B,)
        similarity = self.embed(image_features.to(self.feature_mean.device)) @ self.bank.float().T  # (B, N)
        return 1.0 - similarity.topk(self.k, dim=-1).values[:, -1]


def fit_ood_scorer(train_features: Tensor, fit: OODFit = OODFit()) -> OODScorer:
    """PCA of the train images' mean-pooled features, and their unit embeddings as the bank."""
    if train_features.dim() != 3 or train_features.size(0) <= fit.k:
        raise OODError(f"need (N, T, D) train features with N > k={fit.k}, got {tuple(train_features.shape)}")
    pooled = train_features.float().mean(dim=1)  # (N, D)
    dims = min(fit.dims, pooled.size(0) - 1, pooled.size(1))
    keep = torch.linspace(0, pooled.size(0) - 1, min(fit.max_bank, pooled.size(0))).round().long()
    scorer = OODScorer(pooled.size(1), dims, keep.numel(), fit.k)
    scorer.feature_mean.copy_(pooled.mean(dim=0))
    with torch.random.fork_rng(devices=[]):  # pca_lowrank draws a random start: seeded, the same fit every time
        torch.manual_seed(0)
        _, _, components = torch.pca_lowrank(pooled - scorer.feature_mean, q=dims, center=False)
    scorer.components.copy_(components[:, :dims])
    scorer.bank.copy_(scorer.embed(train_features[keep]).half())
    return scorer


class OODGuard(nn.Module):
    """What a checkpoint's OOD file holds: the scorer, the caption confidence, the default thresholds.

    A module, so that moving the model it is attached to (`model.guidance.aids.Guidance`) moves the scorer too.
    """

    def __init__(
        self, scorer: OODScorer, confidence: CaptionConfidence, policy: AbstentionPolicy, backbone_id: str,
        feature_shape: tuple[int, int],
    ) -> None:
        super().__init__()
        self.scorer = scorer
        self.confidence = confidence
        self.policy = policy  # the defaults chosen on val; the worker's settings may replace them
        self.backbone_id = backbone_id
        self.feature_shape = tuple(feature_shape)  # (T, D) of the image features it was fitted on

    @torch.no_grad()
    def scores(
        self, image_features: Tensor, nbest: Sequence[Sequence[tuple[str, float]]], scene_reader: SceneReader | None
    ) -> tuple[list[float], list[list[float]]]:
        """Each image's OOD score, and each of its captions' (text, score) confidence."""
        if self.confidence.uses_scene_reader and scene_reader is None:
            raise OODError("the caption confidence was calibrated with a scene reader, and the model has none")
        ood = self.scorer(image_features).tolist()  # (B,)
        probabilities = scene_reader(image_features).float().cpu() if self.confidence.uses_scene_reader else None
        image_of = [i for i, captions in enumerate(nbest) for _ in captions]
        rows = caption_inputs(
            [text for captions in nbest for text, _ in captions],
            [score for captions in nbest for _, score in captions],
            [ood[i] for i in image_of],
            None if probabilities is None else probabilities[image_of],
            None if probabilities is None else scene_reader.words,
        )
        flat = self.confidence(rows).tolist()
        confidences, start = [], 0
        for captions in nbest:
            confidences.append(flat[start : start + len(captions)])
            start += len(captions)
        return ood, confidences


def save_ood(guard: OODGuard, directory: str | Path, fit: OODFit, figures: dict) -> None:
    """Write the scorer's and calibrator's tensors and the JSON description (with their checksum) into `directory`."""
    tensors = {f"scorer.{name}": value for name, value in guard.scorer.state_dict().items()}
    tensors.update({f"confidence.{name}": value for name, value in guard.confidence.tensors().items()})
    meta = {
        "format": FORMAT,
        "backbone_id": guard.backbone_id,
        "feature_shape": list(guard.feature_shape),
        "dims": guard.scorer.dims,
        "k": guard.scorer.k,
        "confidence_inputs": list(guard.confidence.inputs),
        "max_ood_score": guard.policy.max_ood_score,
        "min_confidence": guard.policy.min_confidence,
        "fit": asdict(fit),
        "figures": figures,
    }
    save_readout(directory, NAME, tensors, meta)


def load_ood(directory: str | Path, backbone_id: str, feature_shape: tuple[int, int]) -> OODGuard | None:
    """The OOD file saved in `directory`, or None when it has none.

    A damaged one raises ReadoutError (`model.guidance.storage`), one fitted for another backbone or feature shape OODError.
    """
    directory = Path(directory)
    stored = load_readout(directory, NAME, (FORMAT,))
    if stored is None:
        return None
    tensors, meta = stored
    tensors_file, meta_file = readout_files(NAME)
    meta_path = directory / meta_file
    if meta.get("backbone_id") != backbone_id:
        raise OODError(f"{meta_path}: fitted on backbone {meta.get('backbone_id')!r}, the model has {backbone_id!r}")
    if meta.get("feature_shape") != list(feature_shape):
        raise OODError(f"{meta_path}: fitted on image features of shape {meta.get('feature_shape')}, the model gives {list(feature_shape)}")
    try:
        scorer = OODScorer(feature_shape[1], int(meta["dims"]), tensors["scorer.bank"].size(0), int(meta["k"]))
        scorer.load_state_dict({name[len("scorer."):]: t for name, t in tensors.items() if name.startswith("scorer.")})
        confidence = CaptionConfidence.from_tensors(
            meta["confidence_inputs"], {name[len("confidence."):]: t for name, t in tensors.items() if name.startswith("confidence.")}
        )
        policy = AbstentionPolicy(float(meta["max_ood_score"]), float(meta["min_confidence"]))
    except ModelError as error:
        raise OODError(f"{meta_path}: {error}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise OODError(f"{meta_path} and {directory / tensors_file} do not describe an OOD scorer for this model: {error!r}") from error
    return OODGuard(scorer, confidence, policy, backbone_id, tuple(feature_shape))
