"""A float16 copy of a checkpoint loads through model.checkpoint unchanged, at half the size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.factory import load_model
from model.data.dataset import load_posts
from model.checkpoint import CheckpointError, copy_checkpoint
from model.training.train_config import TrainConfig
from model.training.trainer import train


def test_float16_copy_loads(small_dataset: Path, tmp_path: Path) -> None:
    full = tmp_path / "full"
    train(load_posts(small_dataset), preset="tiny", out_dir=full, config=TrainConfig(epochs=1, batch_size=36),
          cache_dir=tmp_path / "cache")
    half = copy_checkpoint(full, tmp_path / "half", dtype=torch.float16)
    size_full = (full / "trainable.safetensors").stat().st_size
    size_half = (half / "trainable.safetensors").stat().st_size
    assert size_half < 0.55 * size_full

    a = load_model("tiny", checkpoint=full, device="cpu")
    b = load_model("tiny", checkpoint=half, device="cpu")
    for (name, x), (_, y) in zip(a.prefix.state_dict().items(), b.prefix.state_dict().items()):
        assert y.dtype == torch.float32, name
        torch.testing.assert_close(y, x.half().float(), rtol=0, atol=0)
    assert b.checkpoint_id and b.checkpoint_id != a.checkpoint_id


def test_copy_refuses_to_overwrite_its_source(small_dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    train(load_posts(small_dataset), preset="tiny", out_dir=out, config=TrainConfig(epochs=1, batch_size=36),
          cache_dir=tmp_path / "cache")
    with pytest.raises(CheckpointError, match="must differ"):
        copy_checkpoint(out, out)
