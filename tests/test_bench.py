"""The benchmarks still run (on the tiny preset) and print the machine-readable line they promise."""

from __future__ import annotations

import re

import pytest

from bench import train_step


def test_train_step_times_both_precisions_and_checks_autos_pick(capsys: pytest.CaptureFixture[str]) -> None:
    train_step.main(["--preset", "tiny", "--batch", "2", "--steps", "1"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    found = re.fullmatch(
        r"float32_s=(\d+\.\d+) bfloat16_s=(\d+\.\d+) auto=(float32|bfloat16) auto_is_faster=(true|false)", last
    )
    assert found, last
    assert float(found[1]) > 0 and float(found[2]) > 0
