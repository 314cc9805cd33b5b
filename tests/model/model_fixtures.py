"""Cached tiny models and sample inputs for the model tests.

Loaded once per test session through `functools.cache` (a fixture imported into
several test modules would otherwise be built once per module).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from model.checkpoint import WEIGHTS_FILE
from model.factory import load_model

from model.uapt import UAPT


@functools.cache
def tiny_model(ablation: str | None = None) -> UAPT:
    """A shared tiny model; tests must not train or otherwise change it."""
    return load_model("tiny", device="cpu", ablation=ablation)


def sample_images(count: int) -> list[Image.Image]:
    """Distinct small images of different sizes and colours."""
    return [
        Image.new("RGB", (24 + 7 * i, 40 - 3 * i), ((53 * i) % 256, (97 * i + 40) % 256, (31 * i + 200) % 256))
        for i in range(count)
    ]


def assert_same_trained_weights(expected_dir: Path, actual_dir: Path) -> None:
    """Two checkpoints' trained weights agree to float32 round-off: a resumed run against an unbroken one."""
    expected = load_file(str(expected_dir / WEIGHTS_FILE))
    actual = load_file(str(actual_dir / WEIGHTS_FILE))
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, rtol=1e-5, atol=1e-6)


SAMPLE_KEYWORDS = [["beach", "sunset"], [], ["coffee", "latte", "morning"], ["dog"], ["city", "night"], ["cake"]]


class FakeDtypeTimings:
    """Stands in for `model.device.time_lm_dtypes`: its n-th call finds `winners[n]` the faster dtype."""

    def __init__(self, *winners: torch.dtype) -> None:
        self.winners = list(winners)
        self.calls = 0

    def __call__(self, *args) -> dict[torch.dtype, float]:
        winner = self.winners[self.calls]
        self.calls += 1
        return {dtype: 1.0 if dtype == winner else 2.0 for dtype in (torch.float32, torch.bfloat16)}


def pretend_auto_times_both_dtypes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the trainer see a CPU with native bfloat16 on any machine: 'auto' leaves it both dtypes to time."""
    from model import device

    real = device.training_dtypes
    monkeypatch.setattr(device, "training_dtypes", lambda precision, device: (
        (torch.float32, torch.bfloat16) if precision == "auto" else real(precision, device)))
