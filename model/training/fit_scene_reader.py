"""Fit a scene reader (`model.guidance.scene_reader`): on features and labels, or on a checkpoint's train split.

Minutes, not hours: the frozen image features come from the feature cache, the reader
is a softmax read-out of them, and the LM is loaded only for its tokenizer. It needs
the dataset's scene labels (docs/DATASET.md); the val split scores the fit.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from model.data.dataset import PostRecord
from model.guidance.scene_reader import SceneReader, save_scene_reader
from model.guidance.scene_reader_config import SceneReaderError, SceneReaderFit
from model.guidance.tagger import caption_words, pool_features, single_token_ids
from model.training.features import Split
from model.training.features import checkpoint_splits

logger = logging.getLogger(__name__)


def scene_words(captions: Sequence[str], scenes: Sequence[str], min_count: int, purity: float) -> dict[str, list[str]]:
    """Scene -> the caption words used by at least `min_count` captions, at least `purity` of them showing that scene."""
    uses: dict[str, Counter] = {}
    for text, scene in zip(captions, scenes):
        for word in caption_words(text):
            uses.setdefault(word, Counter())[scene] += 1
    found: dict[str, list[str]] = {scene: [] for scene in sorted(set(scenes))}
    for word, counts in sorted(uses.items()):
        total = sum(counts.values())
        scene, count = counts.most_common(1)[0]
        if total >= min_count and count >= purity * total:
            found[scene].append(word)
    return found


def fit_scene_reader(
    image_features: Tensor,
    scenes: Sequence[str],
    captions: Sequence[str],
    tokenizer,
    fit: SceneReaderFit = SceneReaderFit(),
    val: tuple[Tensor, Sequence[str]] | None = None,
) -> tuple[SceneReader, dict]:
    """Fit the read-out on train images and their scene labels, the words on their captions; returns it and fit figures."""
    if not (image_features.size(0) == len(scenes) == len(captions)) or not scenes:
        raise SceneReaderError(f"{image_features.size(0)} images, {len(scenes)} scene labels and {len(captions)} captions must match")
    words = scene_words(captions, scenes, fit.min_count, fit.purity)
    names, kept_words, token_ids = [], [], []
    for scene, candidates in words.items():
        forms = {word: single_token_ids(tokenizer, word)[0] for word in candidates}
        forms = {word: ids for word, ids in forms.items() if ids}
        if not forms:
            raise SceneReaderError(f"no one-token word of the train captions names scene {scene!r}: it could not be required")
        names.append(scene)
        kept_words.append(sorted(forms))
        token_ids.append(sorted({i for ids in forms.values() for i in ids}))
    reader = SceneReader(image_features.size(-1), fit.bands, names, kept_words, token_ids, fit.min_confidence)
    pooled = pool_features(image_features.float(), fit.bands)
    reader.feature_mean.copy_(pooled.mean(dim=0))
    reader.feature_std.copy_(pooled.std(dim=0).clamp(min=1e-6))
    targets = torch.tensor([names.index(scene) for scene in scenes])
    reader.linear.requires_grad_(True)
    optimizer = torch.optim.Adam(reader.linear.parameters(), lr=fit.lr)
    for _ in tqdm(range(fit.steps), desc="fitting the scene reader", leave=False, mininterval=2):
        loss = F.cross_entropy(reader.read_out(pooled), targets) + fit.l2 * reader.linear.weight.pow(2).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    reader.linear.requires_grad_(False)
    figures: dict = {"train_images": len(scenes), "train_accuracy": accuracy(reader, image_features, scenes)}
    if val is not None:
        figures.update(val_figures(reader, *val))
    return reader, figures


@torch.no_grad()
def accuracy(reader: SceneReader, image_features: Tensor, scenes: Sequence[str]) -> float:
    """Share of images whose most likely scene is their labelled one."""
    predicted = reader(image_features).argmax(dim=-1).tolist()
    return sum(reader.scenes[p] == s for p, s in zip(predicted, scenes)) / max(len(scenes), 1)


@torch.no_grad()
def val_figures(reader: SceneReader, image_features: Tensor, scenes: Sequence[str]) -> dict:
    """Accuracy, and for the threshold and a few others, the share of images above it and the accuracy there."""
    confidence, predicted = reader(image_features).max(dim=-1)
    right = torch.tensor([reader.scenes[p] == s for p, s in zip(predicted.tolist(), scenes)])
    figures: dict = {"val_images": len(scenes), "val_accuracy": float(right.float().mean())}
    for threshold in sorted({0.5, 0.7, 0.8, 0.9, 0.95, reader.min_confidence}):
        above = confidence >= threshold
        figures[f"val_at_{threshold:g}"] = {
            "coverage": float(above.float().mean()),
            "accuracy": float(right[above].float().mean()) if above.any() else None,
        }
    return figures


def _scene_labels(split: Split, name: str) -> list[str]:
    """The split's scene labels; every post must have one, since the reader is fitted and scored on them."""
    missing = [s.post_id for s in split.samples if not (s.labels and isinstance(s.labels.get("scene"), str))]
    if missing:
        raise SceneReaderError(f"{len(missing)} {name} posts have no scene label (first: {missing[0]}); the scene reader needs labels")
    return [s.labels["scene"] for s in split.samples]


def fit_checkpoint_scene_reader(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    fit: SceneReaderFit = SceneReaderFit(),
    *,
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
) -> dict:
    """Fit the reader on the train split's images, labels and captions, save it into `checkpoint`; returns its fit figures."""
    model, train, val = checkpoint_splits(records, checkpoint, cache_dir, device)
    train_scenes = _scene_labels(train, "train")
    reader, figures = fit_scene_reader(
        train.image_features[:],
        train_scenes,
        [s.text for s in train.samples],
        model.tokenizer,
        fit,
        val=(val.image_features[:], _scene_labels(val, "val")) if val.samples else None,
    )
    save_scene_reader(reader, checkpoint, fit, figures)
    logger.info("scene reader: %d scenes fitted on %d train images, saved in %s", len(reader.scenes), len(train_scenes), checkpoint)
    return figures
