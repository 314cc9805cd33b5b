"""The benchmarks still run (on the tiny preset) and print the machine-readable line they promise."""

from __future__ import annotations

import re

import pytest
import torch

from bench import train_step
from model.device import dtype_name, training_dtypes
from model.factory import load_model
from model.training.train_config import TrainConfig


def test_train_step_times_both_precisions_and_checks_autos_pick(capsys: pytest.CaptureFixture[str]) -> None:
    train_step.main(["--preset", "tiny", "--batch", "2", "--steps", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"float32_s=(\d+\.\d+) bfloat16_s=(\d+\.\d+) auto=(float32|bfloat16|timed) auto_is_faster=(true|false|timed)",
        last,
    )
    assert found, last
    candidates = training_dtypes("auto", torch.device("cpu"))
    assert found[3] == ("timed" if len(candidates) > 1 else dtype_name(candidates[0]))


def test_auto_pick_is_fixed_or_timed() -> None:
    assert train_step.auto_pick((torch.float32,), "float32") == ("float32", "true")
    assert train_step.auto_pick((torch.bfloat16,), "float32") == ("bfloat16", "false")
    assert train_step.auto_pick((torch.float32, torch.bfloat16), "bfloat16") == ("timed", "timed")


def test_each_precision_run_has_its_own_lm_dtype_and_float32_prefix() -> None:
    base = load_model("tiny", device="cpu", dtype="float32")
    runs = train_step.precision_runs(base, TrainConfig())
    assert {name: model.lm.dtype for name, (model, _) in runs.items()} == train_step.PRECISIONS
    for model, optimizer in runs.values():
        assert all(p.dtype == torch.float32 for p in model.trainable_parameters())
        assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {
            id(p) for p in model.trainable_parameters()
        }
