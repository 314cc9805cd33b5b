"""A read-out's two files: written and read back as they were, absent as None, refused when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.guidance.storage import ReadoutError, load_readout, readout_files, save_readout

FORMATS = ("toy-readout/1",)


def _saved(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([0.5, -0.5])}
    save_readout(directory, "toy", tensors, {"format": FORMATS[0], "labels": ["a", "b"]})
    return tensors


def test_a_readout_reads_back_as_written_and_an_absent_one_is_none(tmp_path: Path) -> None:
    assert load_readout(tmp_path, "toy", FORMATS) is None
    tensors = _saved(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(readout_files("toy"))
    loaded, meta = load_readout(tmp_path, "toy", FORMATS)
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert meta["labels"] == ["a", "b"] and len(meta["sha256"]) == 64


def test_a_damaged_readout_is_refused(tmp_path: Path) -> None:
    _saved(tmp_path)
    tensors_file, meta_file = (tmp_path / name for name in readout_files("toy"))
    with pytest.raises(ReadoutError, match="not in format"):
        load_readout(tmp_path, "toy", ("toy-readout/2",))
    meta = json.loads(meta_file.read_text())
    tensors_file.write_bytes(tensors_file.read_bytes()[:-4] + b"\0" * 4)
    with pytest.raises(ReadoutError, match="checksum"):
        load_readout(tmp_path, "toy", FORMATS)
    meta_file.write_text("{not json")
    with pytest.raises(ReadoutError, match="cannot read toy"):
        load_readout(tmp_path, "toy", FORMATS)
    meta_file.write_text(json.dumps(meta))
    tensors_file.unlink()
    with pytest.raises(ReadoutError, match="cannot read toy"):
        load_readout(tmp_path, "toy", FORMATS)
