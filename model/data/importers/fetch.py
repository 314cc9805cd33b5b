"""Image URLs -> tar shards of the webdataset layout, fetched under the worker's guards.

Each shard of `shard_size` URLs is fetched by a pool of threads, each fetch under
`model.image_guards` (http(s) only, public addresses unless allow-listed, byte, rate and
pixel limits, one wall-clock budget per image, redirects checked again), and decoded
once to prove it is an image. A finished shard is ``shards/NNNNN.tar`` (members
``KEY.EXT`` and ``KEY.json``, the webdataset layout) plus each image under
``images/NNNNN/``, so posts.jsonl points at plain files and everything downstream reads
them unchanged; ``shards/NNNNN.json`` records every URL's outcome and is written last,
so a rerun skips finished shards and fetches a half-done one again.

Why not img2dataset: it fetches with its own HTTP stack, which cannot pin the connection to
an address checked against the allow-list or re-check redirects, so it cannot enforce the
address guards. webdataset's `TarWriter` writes the shards.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from model.image_guards import (
    ALLOWED_FORMATS,
    GuardedFetcher,
    ImageDecodeError,
    ImageFetchError,
    ImageRefused,
)
from model.image_policy import ImagePolicy

SHARDS_DIR = "shards"
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tiff"}
REASONS = ((ImageRefused, "image_refused"), (ImageFetchError, "image_fetch"), (ImageDecodeError, "image_decode"))


@dataclass(frozen=True)
class FetchItem:
    key: str  # the webdataset key: no dots, unique in the import
    url: str
    meta: dict  # stored as KEY.json in the shard


@dataclass(frozen=True)
class Fetched:
    """One URL's outcome: the image's path in the dataset folder, or why there is none."""

    path: str | None = None
    reason: str | None = None
    detail: str | None = None


def fetch_to_shards(
    items: Sequence[FetchItem], out_dir: Path, policy: ImagePolicy, *, shard_size: int, workers: int
) -> dict[str, Fetched]:
    """Fetch every item's URL into shards under `out_dir`; returns key -> outcome."""
    if shard_size < 1 or workers < 1:
        raise ValueError(f"shard_size and workers must be >= 1, got {shard_size} and {workers}")
    fetcher = GuardedFetcher(policy)
    (out_dir / SHARDS_DIR).mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Fetched] = {}
    shards = [items[start:start + shard_size] for start in range(0, len(items), shard_size)]
    with tqdm(total=len(items), desc="fetching images", unit="img", mininterval=2) as progress, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        for number, shard in enumerate(shards):
            done = out_dir / SHARDS_DIR / f"{number:05d}.json"
            if done.is_file():
                outcomes.update({key: Fetched(**value) for key, value in json.loads(done.read_text(encoding="utf-8")).items()})
                progress.update(len(shard))
                continue
            results = []
            for result in pool.map(lambda item: _fetch_one(fetcher, item), shard):
                results.append(result)
                progress.update(1)
            outcomes.update(_write_shard(out_dir, number, shard, results))
    return outcomes


def _fetch_one(fetcher: GuardedFetcher, item: FetchItem) -> tuple[bytes, str] | Fetched:
    try:
        data = fetcher.fetch_url(item.url)
        fetcher.decode(data)  # the pixel limit and a full decode: only real images go into a shard
        with Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS) as probe:
            return data, EXTENSIONS[probe.format]
    except Exception as exc:
        for kind, reason in REASONS:
            if isinstance(exc, kind):
                return Fetched(reason=reason, detail=str(exc))
        raise


def _write_shard(out_dir: Path, number: int, shard: Sequence[FetchItem], results: list) -> dict[str, Fetched]:
    import webdataset

    name = f"{number:05d}"
    images = out_dir / "images" / name
    images.mkdir(parents=True, exist_ok=True)
    outcomes: dict[str, Fetched] = {}
    partial = out_dir / SHARDS_DIR / f"{name}.tar.partial"
    with webdataset.TarWriter(str(partial)) as tar:
        for item, result in zip(shard, results):
            if isinstance(result, Fetched):
                outcomes[item.key] = result
                continue
            data, ext = result
            tar.write({"__key__": item.key, ext: data, "json": item.meta})
            (images / f"{item.key}.{ext}").write_bytes(data)
            outcomes[item.key] = Fetched(path=f"images/{name}/{item.key}.{ext}")
    os.replace(partial, out_dir / SHARDS_DIR / f"{name}.tar")
    done = out_dir / SHARDS_DIR / f"{name}.json"
    record = {key: {k: v for k, v in vars(o).items() if v is not None} for key, o in outcomes.items()}
    (done.with_suffix(".json.partial")).write_text(json.dumps(record) + "\n", encoding="utf-8")
    os.replace(done.with_suffix(".json.partial"), done)
    return outcomes
