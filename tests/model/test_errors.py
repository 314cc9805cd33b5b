"""The model's errors share one root, and the command lines catch that root, never a bare ValueError."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.main import main
from model.assets import AssetMissing
from model.checkpoint import CheckpointError
from model.config import ConfigError
from model.data.dataset import DatasetError
from model.device import DeviceError
from model.encoders import WeightsMismatch
from model.errors import ModelError
from model.evaluation.metrics import MetricsError
from model.factory import ModelUnavailable
from model.generation import GenerationError
from model.training.trainer import TrainingError
from model.uapt import InputError

ROOT = Path(__file__).resolve().parents[2]
NAMED = (
    AssetMissing, CheckpointError, ConfigError, DatasetError, DeviceError, GenerationError,
    InputError, MetricsError, ModelUnavailable, TrainingError, WeightsMismatch,
)


@pytest.mark.parametrize("error", NAMED, ids=lambda error: error.__name__)
def test_each_named_error_is_a_model_error_and_still_a_value_error(error: type[Exception]) -> None:
    assert issubclass(error, ModelError) and issubclass(error, ValueError)


def test_the_root_imports_nothing_from_model() -> None:
    """Every model module, the torch-free config included, imports it: it must not pull the package in."""
    code = "import sys, model.errors; print(sorted(m for m in sys.modules if m.startswith('model')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['model', 'model.errors']"


def test_bad_input_ends_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", "--out", str(tmp_path), "--users", "0"])
    assert exit_info.value.code == "uapt data synth: users must be >= 1, got 0"


@pytest.mark.parametrize("bug", [ValueError("a library's own complaint"), RuntimeError("a bug")])
def test_an_unexpected_error_keeps_its_traceback(
    bug: Exception, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import model.data.synth

    def broken(*args, **kwargs):
        raise bug

    monkeypatch.setattr(model.data.synth, "write_dataset", broken)
    with pytest.raises(type(bug)) as raised:
        main(["data", "synth", "--out", str(tmp_path)])
    assert raised.value is bug


@pytest.fixture
def root_log_level() -> Iterator[None]:
    """`uapt demo` quietens the root logger; put it back for the tests after this one."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _demo_raising(error: Exception, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run `uapt demo` with its work replaced by one that raises `error`."""
    import cli.demo

    def failing(**kwargs) -> int:
        raise error

    monkeypatch.setattr(cli.demo, "run_demo", failing)
    main(["demo", "--preset", "tiny", "--untrained"])


def test_demo_turns_a_model_error_into_one_line(monkeypatch: pytest.MonkeyPatch, root_log_level: None) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _demo_raising(ConfigError("preset 'x' does not exist"), monkeypatch)
    assert exit_info.value.code == "uapt demo: preset 'x' does not exist"


def test_demo_lets_a_plain_value_error_through(monkeypatch: pytest.MonkeyPatch, root_log_level: None) -> None:
    bug = ValueError("a bug")
    with pytest.raises(ValueError) as raised:
        _demo_raising(bug, monkeypatch)
    assert raised.value is bug
