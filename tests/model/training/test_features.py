"""The frozen-feature cache: keyed by backbone and input bytes, reused, never pickled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.training.features import FeatureCache


class FakeModel:
    """Encodes an image as its mean colour and a text as its length; counts calls."""

    def __init__(self, backbone: str = "fake-backbone") -> None:
        self.backbone = backbone
        self.image_calls = 0
        self.context_calls = 0

    def backbone_id(self) -> str:
        return self.backbone

    def encode_images(self, images):
        self.image_calls += 1
        return torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32).mean(axis=(0, 1)) for im in images]))

    def encode_context(self, texts):
        self.context_calls += 1
        return torch.tensor([[float(len(t)), 1.0] for t in texts])


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (8, 8), colour).save(path)
        paths.append(path)
    return paths


def test_features_are_computed_once_and_reused(images: list[Path], tmp_path: Path) -> None:
    model = FakeModel()
    first = FeatureCache(tmp_path / "cache", model, batch_size=2)
    feats = first.image_features(images + images[:1])  # a repeat is encoded once
    assert feats.shape == (4, 3) and first.encoded_images == 3 and model.image_calls == 2
    torch.testing.assert_close(feats[0], torch.tensor([255.0, 0.0, 0.0]))
    torch.testing.assert_close(feats[3], feats[0])

    second = FeatureCache(tmp_path / "cache", model)
    torch.testing.assert_close(second.image_features(images), feats[:3])
    ctx = second.context_features(["ab", "abcd"])
    assert second.encoded_images == 0 and second.encoded_contexts == 2
    assert second.context_features(["abcd"]).tolist() == [[4.0, 1.0]]
    assert second.encoded_contexts == 2 and ctx.shape == (2, 2)


def test_key_is_the_file_content_not_its_name(images: list[Path], tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", FakeModel())
    cache.image_features(images)
    Image.new("RGB", (8, 8), (9, 9, 9)).save(images[0])  # same path, new pixels
    feats = cache.image_features(images[:1])
    assert cache.encoded_images == 4
    torch.testing.assert_close(feats[0], torch.tensor([9.0, 9.0, 9.0]))


def test_another_backbone_gets_its_own_entries(images: list[Path], tmp_path: Path) -> None:
    FeatureCache(tmp_path / "cache", FakeModel("a")).image_features(images)
    other = FeatureCache(tmp_path / "cache", FakeModel("b"))
    other.image_features(images)
    assert other.encoded_images == 3
    assert len([d for d in (tmp_path / "cache").iterdir() if d.is_dir()]) == 2


def test_entries_are_plain_npy_without_pickle(images: list[Path], tmp_path: Path) -> None:
    cache = FeatureCache(tmp_path / "cache", FakeModel())
    cache.image_features(images)
    entries = sorted(cache.dir.glob("*.npy"))
    assert len(entries) == 3
    for entry in entries:
        assert np.load(entry, allow_pickle=False).dtype == np.float32
    assert not list(cache.dir.glob("*.tmp*"))
