"""Fit a checkpoint's scene reader (`model.guidance.scene_reader`) on its dataset's train split.

Minutes, not hours: the frozen image features come from the feature cache, the reader
is a softmax read-out of them, and the LM is loaded only for its tokenizer. It needs
the dataset's scene labels (docs/DATASET.md); the val split scores the fit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from model.data.dataset import PostRecord
from model.guidance.scene_reader import fit_scene_reader, save_scene_reader
from model.guidance.scene_reader_config import SceneReaderError, SceneReaderFit
from model.training.features import Split
from model.training.fit_tagger import checkpoint_splits

logger = logging.getLogger(__name__)


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
        train.image_features,
        train_scenes,
        [s.text for s in train.samples],
        model.tokenizer,
        fit,
        val=(val.image_features, _scene_labels(val, "val")) if val.samples else None,
    )
    save_scene_reader(reader, checkpoint, fit, figures)
    logger.info("scene reader: %d scenes fitted on %d train images, saved in %s", len(reader.scenes), len(train_scenes), checkpoint)
    return figures
