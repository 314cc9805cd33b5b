"""scripts/gpu/device_entry.py: the training CLI on a GPU machine without MiniLM (docs/GPU.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from model import encoders
from model.config import get_config

ENTRY = Path(__file__).resolve().parents[2] / "scripts" / "gpu" / "device_entry.py"


def test_its_context_encoder_matches_minilm_and_refuses_texts_the_cache_lacks(monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("device_entry", ENTRY)
    entry = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(entry)
    real = encoders._sentence_transformer(get_config("offline").context_encoder)
    monkeypatch.setattr(encoders, "_sentence_transformer", encoders._sentence_transformer)  # undone after the test

    with pytest.raises(SystemExit) as parsed:
        entry.main(["train", "--help"])
    assert parsed.value.code == 0
    stand_in = encoders._sentence_transformer(get_config("offline").context_encoder)
    assert stand_in.dim == real.dim  # the cached features it stands in for have the real encoder's width
    with pytest.raises(RuntimeError, match="missing from the carried feature cache"):
        stand_in(["beach sunset"])
    with pytest.raises(SystemExit) as refused:
        entry.main(["worker", "--help"])  # only the training CLI is there
    assert refused.value.code == 2
