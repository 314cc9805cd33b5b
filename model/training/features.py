"""On-disk cache of frozen features, so each image and context is encoded once; a split's features.

A split's image features come from the sharded `model.training.feature_store`
(memory-mapped, keyed by post); the small context embeddings from this cache.

The backbones are frozen, so an image's features (and a keyword text's context
embedding) never change while the backbone stays the same. Entries live under
``ROOT/<sha256(backbone_id)[:16]>/`` and are named by the SHA-256 of the input:
the image file's bytes, or the context text. Values are ``.npy`` files written
and read with ``allow_pickle=False``: loading a cache never unpickles.

``encoded_images`` / ``encoded_contexts`` count the inputs actually sent to
the encoders, which shows (and lets tests check) that a second run reuses the
cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from model.checkpoint import read_checkpoint_config
from model.config import ConfigError
from model.data.dataset import PostRecord
from model.data.samples import Sample, build_samples, train_profiles
from model.factory import load_model
from model.uapt import UAPT
from model.training.feature_store import FeatureStore, ImageKey, StoredFeatures

logger = logging.getLogger(__name__)

BACKBONE_FILE = "backbone_id.txt"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def context_key(text: str) -> str:
    """The cache entry name (less ``.npy``) of a keyword text's context features."""
    return f"ctx-{sha256_hex(text.encode('utf-8'))}"


class FeatureCache:
    """Frozen image and context features of one model's backbones, cached on disk."""

    def __init__(self, root: str | Path, model, *, batch_size: int = 32):
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size
        backbone_id = model.backbone_id()
        self.dir = Path(root) / sha256_hex(backbone_id.encode())[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / BACKBONE_FILE).write_text(backbone_id + "\n", encoding="utf-8")
        self.encoded_images = 0
        self.encoded_contexts = 0

    def image_features(self, paths: Sequence[Path]) -> torch.Tensor:
        """Features of the image files, (N, *feat_shape), float32 on the CPU."""
        keys = [f"img-{sha256_hex(Path(p).read_bytes())}" for p in paths]

        def encode(batch: list[Path]) -> torch.Tensor:
            images = []
            for path in batch:
                with Image.open(path) as image:
                    images.append(image.convert("RGB"))
            self.encoded_images += len(batch)
            return self.model.encode_images(images)

        return self._lookup(keys, list(paths), encode)

    def context_features(self, texts: Sequence[str]) -> torch.Tensor:
        """Context embeddings of the keyword texts, (N, d_ctx), float32 on the CPU."""
        keys = [context_key(t) for t in texts]

        def encode(batch: list[str]) -> torch.Tensor:
            self.encoded_contexts += len(batch)
            return self.model.encode_context(batch)

        return self._lookup(keys, list(texts), encode)

    def _lookup(self, keys: list[str], inputs: list, encode: Callable[[list], torch.Tensor]) -> torch.Tensor:
        values: dict[str, np.ndarray] = {}
        missing: dict[str, object] = {}
        for key, item in zip(keys, inputs):
            if key in values or key in missing:
                continue
            path = self.dir / f"{key}.npy"
            if path.is_file():
                values[key] = np.load(path, allow_pickle=False)
            else:
                missing[key] = item
        if missing:
            logger.info("encoding %d inputs not in the feature cache %s", len(missing), self.dir)
        todo = list(missing.items())
        with tqdm(
            total=len(todo), desc="encoding features", unit="input", leave=False, mininterval=5, disable=not todo
        ) as bar:
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                with torch.no_grad():
                    feats = encode([item for _, item in chunk]).float().cpu().numpy()
                for (key, _), feat in zip(chunk, feats):
                    self._store(key, feat)
                    values[key] = feat
                bar.update(len(chunk))
        return torch.from_numpy(np.stack([values[k] for k in keys]))

    def _store(self, key: str, value: np.ndarray) -> None:
        """Write atomically, so a killed run never leaves a half-written entry behind."""
        final = self.dir / f"{key}.npy"
        tmp = self.dir / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, value, allow_pickle=False)
        os.replace(tmp, final)


STORE_DIR = "store"  # the default feature store, inside the cache's folder of the model's backbones


def default_store(cache: FeatureCache) -> FeatureStore:
    """The feature store beside the cache's entries: one per backbone, so it never meets another."""
    return FeatureStore(cache.dir / STORE_DIR, cache.model.backbone_id())


class IndexedRows:
    """Per-sample rows of a small table: a split's posts share few distinct context texts (about one per user).

    Indexed like the (N, d) tensor it stands for, by an int, a slice or an index tensor.
    """

    def __init__(self, table: torch.Tensor, rows: torch.Tensor) -> None:
        self.table = table  # (distinct, d)
        self.rows = rows  # (N,)

    def __len__(self) -> int:
        return len(self.rows)

    def size(self, dim: int) -> int:
        return (len(self.rows), *self.table.shape[1:])[dim]

    def __getitem__(self, index) -> torch.Tensor:
        return self.table[self.rows[index]]


Features = torch.Tensor | StoredFeatures | IndexedRows  # indexed alike: rows in, a float32 tensor out


@dataclass(frozen=True)
class Split:
    """One split's samples with their frozen features, row i belonging to sample i.

    Features are a tensor, or views (`StoredFeatures`, `IndexedRows`) that read only the
    rows asked for; `[:]` gives any of them whole as a tensor.
    """

    samples: list[Sample]
    image_features: Features  # (N, *feat_shape)
    context_features: Features  # (N, d_ctx)


def encode_split(
    records: Sequence[PostRecord],
    split: str,
    k: int,
    cache: FeatureCache,
    profiles=None,
    store: FeatureStore | None = None,
    workers: int | None = None,
) -> Split:
    """Samples of `split` plus their frozen features: images through `store` (default: `default_store`),
    contexts through the cache; each extracted or encoded only when missing.

    `workers` are the processes that decode images for the extraction (default: `default_workers`).
    """
    profiles = profiles if profiles is not None else train_profiles(records)
    samples = build_samples(records, split, k, profiles)
    if not samples:
        return Split(samples, torch.empty(0), torch.empty(0))
    store = store if store is not None else default_store(cache)
    store.extract(cache.model.image_encoder, [ImageKey.of(s.post_id, s.image) for s in samples], workers=workers)
    texts = sorted({s.context_text for s in samples})
    row_of = {text: row for row, text in enumerate(texts)}
    contexts = IndexedRows(cache.context_features(texts), torch.tensor([row_of[s.context_text] for s in samples]))
    return Split(samples, store.features([s.post_id for s in samples]), contexts)


def checkpoint_splits(
    records: Sequence[PostRecord], checkpoint: str | Path, cache_dir: str | Path, device: str
) -> tuple[UAPT, Split, Split]:
    """The checkpoint's model and its train and val splits with their frozen features: what a read-out is fitted on."""
    model = load_model(read_checkpoint_config(Path(checkpoint)), checkpoint=checkpoint, device=device)
    cache = FeatureCache(cache_dir, model)
    profiles = train_profiles(records)
    # the keyword count only shapes the context features, which a read-out does not read
    return model, encode_split(records, "train", 5, cache, profiles), encode_split(records, "val", 5, cache, profiles)
