"""Checkpoints: round trip gives identical captions; bad checkpoints give a clear CheckpointError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import CheckpointError, save_checkpoint
from model.config import DecodingOptions

from model.factory import load_model
from model.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_checkpoint_config
from model_fixtures import sample_images, tiny_model


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny model whose prefix weights differ from the untrained ones, saved to disk."""
    model = load_model("tiny", device="cpu")
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.5)
    out = save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "run1", extra={"step": 7})
    return out, model


def _captions(model) -> list[list[tuple[str, float, list[int]]]]:
    images = model.encode_images(sample_images(3))
    context = model.encode_context(["beach", "coffee latte", ""])
    result = model.generate(images, context, DecodingOptions(max_new_tokens=8))
    return [[(c.text, c.score, c.token_ids) for c in image] for image in result]


def test_round_trip_gives_identical_weights_and_captions(trained_checkpoint) -> None:
    path, trained = trained_checkpoint
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    loaded = load_model("tiny", device="cpu", checkpoint=path)
    for (name, a), (_, b) in zip(trained.prefix.state_dict().items(), loaded.prefix.state_dict().items()):
        assert torch.equal(a, b), name
    assert _captions(loaded) == _captions(trained)
    assert _captions(loaded) != _captions(tiny_model())  # the checkpoint really changed something
    assert loaded.checkpoint_id is not None and loaded.checkpoint_id.startswith("run1@")
    meta = json.loads((path / CONFIG_FILE).read_text())
    assert meta["extra"] == {"step": 7} and meta["backbone_id"] == trained.backbone_id()
    assert read_checkpoint_config(path) == trained.config


def test_checkpoint_for_another_ablation_is_refused(trained_checkpoint) -> None:
    path, _ = trained_checkpoint
    with pytest.raises(CheckpointError, match="different model.*ablation"):
        load_model("tiny", device="cpu", ablation="no_fusion", checkpoint=path)


def test_changed_architecture_in_config_is_refused(trained_checkpoint, tmp_path: Path) -> None:
    path, _ = trained_checkpoint
    bad = _copy(path, tmp_path)
    meta = json.loads((bad / CONFIG_FILE).read_text())
    meta["config"]["d_model"] = 64
    (bad / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="d_model: checkpoint 64 vs model 32"):
        load_model("tiny", device="cpu", checkpoint=bad)


def test_checkpoint_from_another_init_seed_loads_into_the_preset(trained_checkpoint, tmp_path: Path) -> None:
    path, trained = trained_checkpoint
    reseeded = _copy(path, tmp_path)
    meta = json.loads((reseeded / CONFIG_FILE).read_text())
    meta["config"]["init_seed"] = 3  # where training started says nothing about what the weights mean
    (reseeded / CONFIG_FILE).write_text(json.dumps(meta))
    loaded = load_model("tiny", device="cpu", checkpoint=reseeded)
    assert torch.equal(loaded.prefix.to_lm.weight, trained.prefix.to_lm.weight)


def test_corrupt_weights_are_refused(trained_checkpoint, tmp_path: Path) -> None:
    path, _ = trained_checkpoint
    bad = _copy(path, tmp_path)
    data = bytearray((bad / WEIGHTS_FILE).read_bytes())
    data[-10] ^= 0xFF
    (bad / WEIGHTS_FILE).write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        load_model("tiny", device="cpu", checkpoint=bad)


def test_truncated_weights_with_matching_checksum_are_refused(trained_checkpoint, tmp_path: Path) -> None:
    """Even a file whose checksum was updated must still parse as safetensors."""
    from model.assets import file_sha256

    path, _ = trained_checkpoint
    bad = _copy(path, tmp_path)
    (bad / WEIGHTS_FILE).write_bytes((bad / WEIGHTS_FILE).read_bytes()[:100])
    meta = json.loads((bad / CONFIG_FILE).read_text())
    meta["sha256"] = file_sha256(bad / WEIGHTS_FILE)
    (bad / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model("tiny", device="cpu", checkpoint=bad)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no_config", "not a UAPT checkpoint"),
        ("no_weights", "has no trainable.safetensors"),
        ("garbage_config", "unreadable"),
        ("wrong_format", "not in format"),
    ],
)
def test_missing_or_garbled_files_are_refused(trained_checkpoint, tmp_path: Path, damage: str, message: str) -> None:
    path, _ = trained_checkpoint
    bad = _copy(path, tmp_path)
    if damage == "no_config":
        (bad / CONFIG_FILE).unlink()
    elif damage == "no_weights":
        (bad / WEIGHTS_FILE).unlink()
    elif damage == "garbage_config":
        (bad / CONFIG_FILE).write_bytes(b"\x80not json")
    else:
        (bad / CONFIG_FILE).write_text(json.dumps({"format": "something-else", "config": {}}))
    with pytest.raises(CheckpointError, match=message):
        load_model("tiny", device="cpu", checkpoint=bad)


def test_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a UAPT checkpoint"):
        load_model("tiny", device="cpu", checkpoint=tmp_path / "nope")


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        (target / name).write_bytes((source / name).read_bytes())
    return target
