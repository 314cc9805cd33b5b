"""The sharded feature store: round trip, resume after a kill, and refusal of another backbone's store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.training.feature_store import FeatureStore, ImageKey, StoreError

REPO = Path(__file__).resolve().parents[3]


class MeanColour(torch.nn.Module):
    """A stand-in encoder: an image's feature is its mean colour per channel, as (1, 3) tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))  # gives the encoder a device and dtype, as a backbone does
        self.calls = 0

    @staticmethod
    def preprocess(image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)  # (3, H, W)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (pixels.mean(dim=(2, 3)) * self.scale)[:, None]  # (B, 1, 3)


def write_images(folder: Path, count: int) -> list[ImageKey]:
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for i in range(count):
        path = folder / f"{i}.png"
        Image.new("RGB", (8, 8), (10 * i, 255 - 10 * i, 7)).save(path)
        keys.append(ImageKey.of(f"post{i}", path))
    return keys


def expected(i: int) -> list[list[float]]:
    return [[10.0 * i, 255.0 - 10 * i, 7.0]]


def test_round_trip_in_shards_read_back_through_memory_maps(tmp_path: Path) -> None:
    keys = write_images(tmp_path / "img", 5)
    store = FeatureStore(tmp_path / "store", "fake")
    assert store.extract(MeanColour(), keys, batch_size=2, workers=1, shard_rows=2) == 5
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["shards"] == ["shard-00000", "shard-00001", "shard-00002"] and manifest["dtype"] == "float16"
    assert np.load(tmp_path / "store" / "shard-00002.npy").dtype == np.float16

    again = FeatureStore(tmp_path / "store", "fake")
    encoder = MeanColour()
    assert again.missing(keys) == [] and again.extract(encoder, keys) == 0 and encoder.calls == 0
    rows = again.features(["post3", "post0", "post4"])
    assert isinstance(rows.shards[0], np.memmap)  # read on demand, not loaded
    torch.testing.assert_close(rows[torch.tensor([0, 2])], torch.tensor([expected(3), expected(4)]))
    torch.testing.assert_close(rows[1:], torch.tensor([expected(0), expected(4)]))
    assert rows[0].dtype == torch.float32 and rows.size(0) == 3

    Image.new("RGB", (8, 8), (1, 2, 3)).save(keys[1].path)  # the image changed: a new mtime, extracted again
    changed = ImageKey.of("post1", keys[1].path)
    assert again.missing([changed, *keys[2:]]) == [changed]
    again.extract(MeanColour(), [changed], workers=0)
    torch.testing.assert_close(FeatureStore(tmp_path / "store", "fake").features(["post1"])[0], torch.tensor([[1.0, 2.0, 3.0]]))


def test_a_store_of_another_backbone_is_refused(tmp_path: Path) -> None:
    FeatureStore(tmp_path / "store", "backbone-a").extract(MeanColour(), write_images(tmp_path / "img", 1), workers=0)
    with pytest.raises(StoreError, match="holds features of backbone 'backbone-a', not of this model's 'backbone-b'"):
        FeatureStore(tmp_path / "store", "backbone-b")


def test_a_missing_post_is_named(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "store", "fake")
    with pytest.raises(StoreError, match="no features of post 'nobody'"):
        store.features(["nobody"])


KILLED_CHILD = """
import os, signal, sys
import numpy as np
sys.path[:0] = [{tests!r}, {repo!r}]
from test_feature_store import MeanColour, write_images
from model.training import feature_store

real_save, saves = np.save, 0

def save_then_die_halfway(file, array):
    global saves
    saves += 1
    if saves < 2:
        return real_save(file, array)
    real_save(file, array)
    file.truncate(file.tell() // 2)  # the second shard's rows are half on disk
    file.flush()
    os.kill(os.getpid(), signal.SIGKILL)

feature_store.np.save = save_then_die_halfway
store = feature_store.FeatureStore({store!r}, "fake")
store.extract(MeanColour(), write_images(__import__("pathlib").Path({images!r}), 5), batch_size=2, workers=0, shard_rows=2)
"""


def test_a_process_killed_mid_extraction_resumes_without_reading_the_half_written_shard(tmp_path: Path) -> None:
    store_dir, images = tmp_path / "store", tmp_path / "img"
    child = KILLED_CHILD.format(tests=str(Path(__file__).parent), repo=str(REPO), store=str(store_dir), images=str(images))
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(child)], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    half_written = [p for p in os.listdir(store_dir) if p.endswith(".tmp")]
    assert half_written and half_written[0].startswith(".shard-00001.npy")  # the kill left it there, unlisted
    assert json.loads((store_dir / "manifest.json").read_text())["shards"] == ["shard-00000"]

    keys = [ImageKey.of(f"post{i}", images / f"{i}.png") for i in range(5)]
    resumed = FeatureStore(store_dir, "fake")
    assert len(resumed) == 2 and [k.post_id for k in resumed.missing(keys)] == ["post2", "post3", "post4"]
    assert resumed.extract(MeanColour(), keys, batch_size=2, workers=0, shard_rows=2) == 3
    rows = FeatureStore(store_dir, "fake").features([f"post{i}" for i in range(5)])
    torch.testing.assert_close(rows[:], torch.tensor([expected(i) for i in range(5)]))


def test_stores_opened_side_by_side_extract_in_turn_and_keep_each_others_shards(tmp_path: Path) -> None:
    """Two processes' views of one store (ablation runs side by side): the second extracts only what the first did not,
    into a shard of its own, where it used to write 'shard-00000' over the first one's rows."""
    keys = write_images(tmp_path / "img", 4)
    first, second = FeatureStore(tmp_path / "store", "fake"), FeatureStore(tmp_path / "store", "fake")  # both see no shard
    assert first.extract(MeanColour(), keys[:2], workers=0) == 2
    assert second.extract(MeanColour(), keys, workers=0) == 2
    assert json.loads((tmp_path / "store" / "manifest.json").read_text())["shards"] == ["shard-00000", "shard-00001"]
    for store in (first, second, FeatureStore(tmp_path / "store", "fake")):
        owned = ["post0", "post1"] if store is first else ["post0", "post1", "post2", "post3"]
        torch.testing.assert_close(store.features(owned)[:], torch.tensor([expected(int(p[-1])) for p in owned]))


def test_a_store_holds_its_lock_while_it_extracts(tmp_path: Path) -> None:
    from filelock import FileLock, Timeout

    class Peeking(MeanColour):
        """Tries the store's lock from outside while the store is encoding."""

        def features(self, pixels: torch.Tensor) -> torch.Tensor:
            with pytest.raises(Timeout):
                FileLock(tmp_path / "store" / ".lock").acquire(timeout=0)
            return super().features(pixels)

    encoder = Peeking()
    assert FeatureStore(tmp_path / "store", "fake").extract(encoder, write_images(tmp_path / "img", 2), workers=0) == 2
    assert encoder.calls == 1
    FileLock(tmp_path / "store" / ".lock").acquire(timeout=0)  # and lets it go afterwards
