"""Frozen image features of a dataset's posts, written once in shards and memory-mapped to train.

One store folder holds one backbone's features:

    manifest.json             {"format", "backbone_id", "dtype", "feature_shape", "shards": [...]}
    shard-00000.npy           (rows, *feature_shape) in `dtype` (float16 by default)
    shard-00000.keys.json     one [post_id, image path, size, mtime_ns] per row

A shard's two files are written under temporary names and renamed; the manifest is
rewritten (also by rename) only after that, and only shards it lists are ever read.
A process killed at any point therefore leaves a store whose listed shards are whole;
the next extraction starts after the last listed shard.

Processes that share a store (several trainings at once on one machine) take turns to
extract: each holds the store's lock file (`.lock`) while it extracts, and first indexes
the shards the others listed meanwhile. So no shard name is written twice and no image
is extracted twice; reading needs no lock, as a listed shard never changes.

An image is known by its post id, path, size and modification time. Reading those is
a `stat`, where a content hash reads every byte of every image on every run (a million
posts is tens of GB). A file replaced in place gets a new mtime, and a post whose image
changed is extracted again into a later shard, which then wins. A copy that keeps
mtimes (`cp -p`, rsync -a) keeps the features; one that does not re-extracts them.

At training time `StoredFeatures` reads rows through numpy memory maps: the pages are
the kernel's file cache, not the process's memory, so a growing dataset does not grow
the trainer.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model.errors import ModelError

logger = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
LOCK_FILE = ".lock"  # held while a process extracts, so that processes sharing a store never write the same shard
STORE_DTYPES = ("float16", "float32")
SHARD_BYTES = 256 * 2**20  # a shard's features are held in memory until it is written


class StoreError(ModelError):
    """A feature store that cannot be used with this model; the message names the store and why."""


@dataclass(frozen=True)
class ImageKey:
    """What a stored row was computed from: the post and its image file as it was then."""

    post_id: str
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, post_id: str, path: str | Path) -> ImageKey:
        stat = os.stat(path)
        return cls(post_id, str(path), stat.st_size, stat.st_mtime_ns)


def default_workers() -> int:
    """Decoding processes: every core but the one that runs the encoder, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class FeatureStore:
    """One backbone's image features of posts, sharded on disk; see the module docstring for the layout."""

    def __init__(self, root: str | Path, backbone_id: str, *, dtype: str = "float16") -> None:
        if dtype not in STORE_DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
        self.root = Path(root)
        self.backbone_id = backbone_id
        self.encoded_images = 0  # images this object sent to the encoder
        self.manifest = {"format": FORMAT, "backbone_id": backbone_id, "dtype": dtype, "feature_shape": None,
                         "shards": []}
        self._index: dict[str, tuple[int, int, ImageKey]] = {}  # post id -> (shard, row, key)
        self._read_manifest()
        self._arrays: dict[int, np.ndarray] = {}

    def _read_manifest(self) -> None:
        """Index the shards the manifest on disk lists beyond those already indexed (all, the first time)."""
        path = self.root / MANIFEST
        if not path.is_file():
            return
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise StoreError(f"feature store {self.root}: format {manifest.get('format')}, expected {FORMAT}")
        if manifest["backbone_id"] != self.backbone_id:
            raise StoreError(
                f"feature store {self.root} holds features of backbone {manifest['backbone_id']!r}, "
                f"not of this model's {self.backbone_id!r}: give another store folder"
            )
        known = len(self.manifest["shards"])
        self.manifest = manifest
        for shard_no in range(known, len(manifest["shards"])):
            self._read_keys(shard_no, manifest["shards"][shard_no])

    @property
    def dtype(self) -> str:
        return self.manifest["dtype"]

    def __len__(self) -> int:
        return len(self._index)

    def missing(self, keys: Sequence[ImageKey]) -> list[ImageKey]:
        """The keys with no row in the store, or whose stored row came from another file state; each once."""
        seen: set[str] = set()
        todo = []
        for key in keys:
            entry = self._index.get(key.post_id)
            if (entry is None or entry[2] != key) and key.post_id not in seen:
                seen.add(key.post_id)
                todo.append(key)
        return todo

    def extract(
        self,
        encoder,
        keys: Sequence[ImageKey],
        *,
        batch_size: int = 64,
        workers: int | None = None,
        shard_rows: int | None = None,
    ) -> int:
        """Encode the images the store lacks and write them in shards; returns how many it encoded.

        `encoder` is a `model.encoders.ImageEncoder` (its `preprocess` and `features`):
        worker processes decode and preprocess, the encoder runs on its own device in
        batches. `shard_rows` defaults to about `SHARD_BYTES` of features per shard.
        """
        if not self.missing(keys):
            return 0  # listed shards are never rewritten: what this store has indexed stays valid
        self.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.root / LOCK_FILE)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.info("waiting for another process extracting into the feature store %s", self.root)
            lock.acquire()
        try:
            self._read_manifest()  # shards another process committed since this store was opened
            return self._extract(encoder, self.missing(keys), batch_size, workers, shard_rows)
        finally:
            lock.release()

    def _extract(
        self, encoder, todo: list[ImageKey], batch_size: int, workers: int | None, shard_rows: int | None
    ) -> int:
        """`extract` under the store's lock, of the keys it still lacks."""
        if not todo:
            return 0
        workers = default_workers() if workers is None else workers
        param = next(encoder.parameters())
        loader = DataLoader(
            _ImageFiles([key.path for key in todo], encoder.preprocess),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=param.device.type == "cuda",
        )
        logger.info("extracting %d images into the feature store %s (%d decoding workers)", len(todo), self.root, workers)
        shard: _ShardBuffer | None = None
        done = 0
        with tqdm(total=len(todo), desc="extracting features", unit="image", mininterval=5) as bar:
            for pixels in loader:
                with torch.no_grad():
                    feats = encoder.features(pixels.to(param.device, param.dtype, non_blocking=True))
                feats = feats.float().cpu().numpy().astype(self.dtype, copy=False)
                for row in feats:
                    if shard is None:
                        shard = self._new_shard(row.shape, shard_rows)
                    shard.append(todo[done], row)
                    done += 1
                    if shard.full:
                        self._commit(shard)
                        shard = None
                self.encoded_images += len(feats)
                bar.update(len(feats))
        if shard is not None:
            self._commit(shard)
        return done

    def features(self, post_ids: Sequence[str]) -> StoredFeatures:
        """The stored rows of these posts, in this order, read through memory maps."""
        locations = np.empty((len(post_ids), 2), dtype=np.int64)
        for i, post_id in enumerate(post_ids):
            entry = self._index.get(post_id)
            if entry is None:
                raise StoreError(f"feature store {self.root} has no features of post {post_id!r}: extract them first")
            locations[i] = entry[:2]
        shape = tuple(self.manifest["feature_shape"] or ())
        return StoredFeatures([self._array(s) for s in range(len(self.manifest["shards"]))], locations, shape)

    def bytes_on_disk(self) -> int:
        """Size of the listed shards' files: what the store costs per post, times its posts."""
        names = self.manifest["shards"]
        return sum((self.root / f"{n}.npy").stat().st_size + (self.root / f"{n}.keys.json").stat().st_size for n in names)

    # writing

    def _new_shard(self, row_shape: tuple[int, ...], shard_rows: int | None) -> _ShardBuffer:
        if self.manifest["feature_shape"] is None:
            self.manifest["feature_shape"] = list(row_shape)
        elif tuple(self.manifest["feature_shape"]) != row_shape:
            raise StoreError(f"feature store {self.root}: rows of shape {row_shape}, the store's are "
                             f"{tuple(self.manifest['feature_shape'])}")
        if shard_rows is None:
            row_bytes = int(np.prod(row_shape)) * np.dtype(self.dtype).itemsize
            shard_rows = max(1, min(65536, SHARD_BYTES // max(row_bytes, 1)))
        return _ShardBuffer(f"shard-{len(self.manifest['shards']):05d}", np.empty((shard_rows, *row_shape), self.dtype))

    def _commit(self, shard: _ShardBuffer) -> None:
        """Write the shard's keys and rows under temporary names, rename them, then list the shard in the manifest."""
        self.root.mkdir(parents=True, exist_ok=True)
        keys = [[k.post_id, k.path, k.size, k.mtime_ns] for k in shard.keys]
        _replace_atomically(self.root / f"{shard.name}.keys.json", lambda f: f.write(json.dumps(keys).encode()))
        _replace_atomically(self.root / f"{shard.name}.npy", lambda f: np.save(f, shard.rows[: len(shard.keys)]))
        manifest = {**self.manifest, "shards": [*self.manifest["shards"], shard.name]}
        _replace_atomically(self.root / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
        self.manifest = manifest
        self._read_keys(len(manifest["shards"]) - 1, shard.name, shard.keys)

    def _read_keys(self, shard_no: int, name: str, keys: Sequence[ImageKey] | None = None) -> None:
        if keys is None:
            rows = json.loads((self.root / f"{name}.keys.json").read_text(encoding="utf-8"))
            keys = [ImageKey(p, path, int(size), int(mtime)) for p, path, size, mtime in rows]
        for row, key in enumerate(keys):
            self._index[key.post_id] = (shard_no, row, key)

    def _array(self, shard_no: int) -> np.ndarray:
        if shard_no not in self._arrays:
            path = self.root / f"{self.manifest['shards'][shard_no]}.npy"
            self._arrays[shard_no] = np.load(path, mmap_mode="r", allow_pickle=False)
        return self._arrays[shard_no]


@dataclass
class _ShardBuffer:
    """Rows of the shard being filled, with the keys they belong to."""

    name: str
    rows: np.ndarray  # (capacity, *feature_shape)
    keys: list[ImageKey] = field(default_factory=list)

    def append(self, key: ImageKey, row: np.ndarray) -> None:
        self.rows[len(self.keys)] = row
        self.keys.append(key)

    @property
    def full(self) -> bool:
        return len(self.keys) == len(self.rows)


def _replace_atomically(path: Path, write) -> None:
    """Write through a temporary file in the same folder and rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


class _ImageFiles(Dataset):
    """Image files decoded and preprocessed in the DataLoader's worker processes."""

    def __init__(self, paths: Sequence[str], preprocess) -> None:
        self.paths = list(paths)
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.preprocess(image.convert("RGB"))


class StoredFeatures(Dataset):
    """Rows of a feature store as float32 tensors, read on demand: the training data never sits in memory whole.

    Indexed like the (N, *feature_shape) tensor it stands for, by an int, a slice or
    an index tensor.
    """

    def __init__(self, shards: list[np.ndarray], locations: np.ndarray, feature_shape: tuple[int, ...]) -> None:
        self.shards = shards
        self.locations = locations  # (N, 2): shard number, row
        self.feature_shape = feature_shape

    def __len__(self) -> int:
        return len(self.locations)

    def size(self, dim: int) -> int:
        return (len(self), *self.feature_shape)[dim]

    def __getitem__(self, index: int | slice | torch.Tensor | np.ndarray) -> torch.Tensor:
        if isinstance(index, int):
            return self[np.array([index])][0]
        if isinstance(index, slice):
            index = np.arange(len(self))[index]
        index = np.asarray(index, dtype=np.int64)
        where = self.locations[index]
        out = np.empty((len(index), *self.feature_shape), dtype=np.float32)
        for shard_no in np.unique(where[:, 0]):
            rows = where[:, 0] == shard_no
            out[rows] = self.shards[shard_no][where[rows, 1]]
        return torch.from_numpy(out)
