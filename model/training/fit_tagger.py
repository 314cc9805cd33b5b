"""Fit a checkpoint's image-word tagger (`model.guidance.tagger`) on its dataset's train split.

Minutes, not hours: the frozen image features come from the feature cache, the
tagger is a logistic read-out, and the LM is loaded only for its tokenizer. The
val split scores the fit (binary cross-entropy against the word priors alone).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.checkpoint import read_checkpoint_config
from model.data.dataset import PostRecord
from model.data.samples import train_profiles
from model.factory import load_model
from model.guidance.tagger import TaggerFit, fit_tagger, save_tagger
from model.training.features import FeatureCache, Split, encode_split

if TYPE_CHECKING:
    from model.uapt import UAPT

logger = logging.getLogger(__name__)


def checkpoint_splits(
    records: Sequence[PostRecord], checkpoint: str | Path, cache_dir: str | Path, device: str
) -> tuple[UAPT, Split, Split]:
    """The checkpoint's model and its train and val splits with their frozen features: what a read-out is fitted on."""
    model = load_model(read_checkpoint_config(Path(checkpoint)), checkpoint=checkpoint, device=device)
    cache = FeatureCache(cache_dir, model)
    profiles = train_profiles(records)
    # the keyword count only shapes the context features, which a read-out does not read
    return model, encode_split(records, "train", 5, cache, profiles), encode_split(records, "val", 5, cache, profiles)


def fit_checkpoint_tagger(
    records: Sequence[PostRecord],
    checkpoint: str | Path,
    fit: TaggerFit = TaggerFit(),
    *,
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
) -> dict:
    """Fit the tagger on the train split's images and captions, save it into `checkpoint`; returns its fit figures."""
    model, train, val = checkpoint_splits(records, checkpoint, cache_dir, device)
    tagger, figures = fit_tagger(
        train.image_features,
        [s.text for s in train.samples],
        model.tokenizer,
        fit,
        val=(val.image_features, [s.text for s in val.samples]) if val.samples else None,
    )
    save_tagger(tagger, checkpoint, fit, figures)
    logger.info("image words: %d words fitted on %d train captions, saved in %s", len(tagger.words), len(train.samples), checkpoint)
    return figures
