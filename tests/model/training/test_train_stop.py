"""A signal stops training at a step boundary with its exact state saved, and --resume continues it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model.config import PRESETS, DecodingOptions
from model.data.dataset import load_posts
from model.data.synth import write_dataset
from model.training import trainer
from model.training.stop import EXIT_STOPPED, signals_deferred, stop_on_signals
from model.training.train_config import TrainConfig
from model.training.trainer import train
from model_fixtures import assert_same_trained_weights

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 users x 4 posts: 4 train, 2 val, 2 test."""
    return write_dataset(tmp_path_factory.mktemp("d"), users=2, posts_per_user=4, seed=5)


def test_the_first_signal_sets_the_event_and_gives_the_old_handler_back() -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with stop_on_signals() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.is_set() and seen == []
            os.kill(os.getpid(), signal.SIGTERM)  # a second signal reaches the handler that was there before
            assert seen == [signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM] * 2
    finally:
        signal.signal(signal.SIGTERM, before)


def test_leaving_the_block_without_a_signal_restores_the_handlers() -> None:
    mine = signal.default_int_handler  # set here: a background job's shell may have left SIGINT ignored
    before = signal.signal(signal.SIGINT, mine)
    try:
        with stop_on_signals():
            assert signal.getsignal(signal.SIGINT) is not mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        signal.signal(signal.SIGINT, before)


def test_an_ignored_signal_stays_ignored() -> None:
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as in a background job of a script
    try:
        with stop_on_signals() as stop:
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert not stop.is_set()
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_signal_during_a_save_acts_only_once_the_save_is_done() -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, _frame: seen.append(signum))
    try:
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            assert seen == []
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)


def _stop_at_call(monkeypatch: pytest.MonkeyPatch, call: int) -> threading.Event:
    """An event set during the `call`-th optimizer step, as the signal handler would set it."""
    stop = threading.Event()
    real_step = trainer.optimizer_step
    calls = 0

    def step_and_maybe_request_a_stop(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == call:
            stop.set()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "optimizer_step", step_and_maybe_request_a_stop)
    return stop


@pytest.mark.parametrize(("stop_call", "eval_every"), [(3, 4), (2, 2)], ids=["mid-epoch", "at-a-val-step"])
def test_a_stopped_run_saves_its_step_and_resumes_exactly(
    stop_call: int, eval_every: int, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    posts = load_posts(dataset)
    config = TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1, eval_every=eval_every, precision="float32")
    cache = tmp_path / "cache"
    whole = train(posts, preset=TINY, out_dir=tmp_path / "whole", config=config, cache_dir=cache)

    stop = _stop_at_call(monkeypatch, stop_call)
    part = train(posts, preset=TINY, out_dir=tmp_path / "run", config=config, cache_dir=cache, stop=stop)
    monkeypatch.undo()
    assert part.stopped_early and part.steps == stop_call
    assert part.val_losses == []  # at a val step, the stop skips the check: the state comes first
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["step"] == stop_call
    assert not (tmp_path / "run" / "metrics.json").exists()  # only a finished run has one

    resumed = train(posts, preset=TINY, out_dir=tmp_path / "run", config=config, cache_dir=cache,
                    resume=tmp_path / "run")
    assert not resumed.stopped_early and resumed.steps == 4
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5)
    assert_same_trained_weights(tmp_path / "whole", tmp_path / "run")


def test_a_stop_before_the_first_step_saves_nothing(dataset: Path, tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    result = train(load_posts(dataset), preset=TINY, out_dir=tmp_path / "run", cache_dir=tmp_path / "cache",
                   config=TrainConfig(epochs=1, batch_size=2, precision="float32"), stop=stop)
    assert result.stopped_early and result.steps == 0
    assert not (tmp_path / "run" / "train_state.json").exists()


def test_uapt_train_saves_and_exits_with_its_own_status_on_sigterm(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    log = tmp_path / "train.log"
    command = [sys.executable, "-m", "cli.main", "train", "--data", str(dataset), "--preset", "tiny",
               "--epochs", "100000", "--batch-size", "2", "--precision", "float32", "--eval-every", "1000000",
               "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    with log.open("w") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "training tiny" not in log.read_text():  # the handler is in place before training starts
                assert proc.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "training did not start within 120 s"
                time.sleep(0.2)
            time.sleep(1)  # some steps
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        finally:
            proc.kill()
    text = log.read_text()
    assert code == EXIT_STOPPED, text[-2000:]
    stopped_at = re.search(r"stopped at step (\d+) of", text)
    assert stopped_at and f"--resume {out}" in text, text[-2000:]
    assert json.loads((out / "train_state.json").read_text())["step"] == int(stopped_at[1]) > 0  # the stop's own save
    assert not (out / "metrics.json").exists()


def test_a_stopped_ablation_keeps_its_finished_runs_and_resume_completes_it(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model.evaluation.evaluate import EvalOptions
    from model.training import ablate

    posts = load_posts(dataset)
    common = dict(preset="tiny", out_dir=tmp_path / "ablate", options=EvalOptions(decoding=DecodingOptions(num_beams=1), limit=1),
                  config=TrainConfig(epochs=2, batch_size=2, precision="float32"), cache_dir=tmp_path / "cache",
                  variants=["full", "no_context"])
    stop = _stop_at_call(monkeypatch, 7)  # the first run has 4 steps; step 3 of the second is no val step
    assert ablate.run_ablation(posts, **common, stop=stop) is None
    monkeypatch.undo()
    out = tmp_path / "ablate"
    assert (out / "full-init0" / "run.json").is_file()
    assert json.loads((out / "no_context-init0" / "train_state.json").read_text())["step"] == 3
    assert not (out / "no_context-init0" / "run.json").exists()

    table = ablate.run_ablation(posts, **common, resume=True)
    assert table is not None and "w/o context" in table
    assert (out / "no_context-init0" / "run.json").is_file()
