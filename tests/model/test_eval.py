"""evaluate_checkpoint end to end on the tiny preset, and the CLI's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.dataset import load_posts
from model.evaluate import EvalOptions, evaluate_checkpoint
from model.metrics import METRIC_NAMES
from model.train_config import TrainConfig
from model.trainer import train
from worker.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    train(load_posts(small_dataset), preset="tiny", out_dir=out, config=TrainConfig(epochs=1, batch_size=20),
          cache_dir=out / "cache")
    return out


def test_evaluate_reports_metrics_and_personalization(trained: Path, small_dataset: Path) -> None:
    posts = load_posts(small_dataset)
    report = evaluate_checkpoint(posts, trained, options=EvalOptions(num_beams=2, limit=5), cache_dir=trained / "cache")
    assert report.posts == 5 and report.split == "test"
    assert set(report.metrics) == set(METRIC_NAMES)
    assert 0.0 <= report.personalization <= 1.0
    # The synthetic users' own test captions are mostly closest to their own train captions.
    assert report.personalization_ceiling >= 0.6
    assert [e["reference"] for e in report.examples] == [p.text for p in posts if p.split == "test"][:5]
    assert "| BLEU-1 |" in report.markdown()


def test_cli_evaluate_writes_json(trained: Path, small_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    out = trained / "report.json"
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(trained), "--limit", "2",
              "--num-beams", "1", "--cache-dir", str(trained / "cache"), "--out", str(out)])
    assert done.value.code == 0
    assert json.loads(out.read_text())["posts"] == 2
    assert "CIDEr" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(SystemExit, match=r"^uapt train: .*no posts.jsonl"):
        main(["train", "--data", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"^uapt evaluate: .*not a UAPT checkpoint"):
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^uapt ablate: variants: unknown"):
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--only", "no_such"])


def test_ablate_repeats_each_variant_per_init_seed(tmp_path: Path, small_dataset: Path, capsys) -> None:
    out = tmp_path / "ablate"
    with pytest.raises(SystemExit) as done:
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--only", "full", "no_context",
              "--init-seeds", "0", "1", "--epochs", "1", "--batch-size", "20", "--num-beams", "1", "--limit", "2",
              "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert done.value.code == 0
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"w/o context", "UAPT (full)", "ground-truth captions"}
    assert rows["UAPT (full)"].count(" ± ") == len(METRIC_NAMES) + 2  # every cell is mean ± sd over the 2 seeds

    summary = json.loads((out / "ablation.json").read_text())
    assert [run["init_seed"] for run in summary["full"]] == [0, 1]
    configs = [json.loads((out / f"full-init{seed}" / "config.json").read_text())["config"] for seed in (0, 1)]
    assert [c["init_seed"] for c in configs] == [0, 1]
    weights = [(out / f"full-init{seed}" / "trainable.safetensors").read_bytes() for seed in (0, 1)]
    assert weights[0] != weights[1]


def test_ablate_refuses_repeated_init_seeds(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(SystemExit, match=r"^uapt ablate: init seeds must be distinct"):
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--init-seeds", "1", "1",
              "--out", str(tmp_path / "o")])
