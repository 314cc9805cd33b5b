"""`uapt caption` and `uapt model info` on the tiny preset, and their one-line errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from model.checkpoint import save_checkpoint
from model_fixtures import sample_images, tiny_model
from cli.main import main


def _run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["--log-level", "ERROR", *argv])
    return exit_info.value.code


@pytest.fixture(scope="module")
def image_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    paths = [folder / "one.png", folder / "two.jpg"]
    for path, image in zip(paths, sample_images(2)):
        image.save(path)
    return paths


def test_caption_prints_n_best_per_image(image_files: list[Path], capsys: pytest.CaptureFixture) -> None:
    argv = ["caption", *map(str, image_files), "--preset", "tiny", "--keywords", "beach, sunset", "-n", "2"]
    assert _run([*argv, "--max-new-tokens", "5", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    assert lines[0].startswith(str(image_files[0])) and "tiny:untrained" in lines[0]
    assert lines[1].startswith("  1. ") and lines[2].startswith("  2. ") and "score -" in lines[1]
    assert lines[3].startswith(str(image_files[1]))


def test_caption_uses_the_checkpoint_and_its_preset(
    image_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    checkpoint = save_checkpoint(tiny_model(), tmp_path / "ckpt")
    assert _run(["caption", str(image_files[0]), "--checkpoint", str(checkpoint), "--max-new-tokens", "3"]) == 0
    assert "[model ckpt@" in capsys.readouterr().out


def test_caption_serves_in_the_dtype_asked_for(image_files: list[Path], caplog: pytest.LogCaptureFixture) -> None:
    argv = ["caption", str(image_files[0]), "--preset", "tiny", "--max-new-tokens", "3", "--device", "cpu"]
    with caplog.at_level(logging.INFO, logger="model.serving_dtype"):
        assert _run([*argv, "--serving-dtype", "int8"]) == 0
    assert any("serving dtype int8: the frozen LM decodes in int8" in r.message for r in caplog.records)


def test_caption_refuses_an_unknown_serving_dtype(image_files: list[Path], capsys: pytest.CaptureFixture) -> None:
    assert _run(["caption", str(image_files[0]), "--preset", "tiny", "--serving-dtype", "fp8"]) == 2
    assert "--serving-dtype: invalid choice: 'fp8'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["caption", "{missing}", "--preset", "tiny"], "cannot read image"),
        (["caption", "{image}", "--preset", "tiny", "--num-beams", "0"], "num_beams"),
        (["caption", "{image}", "--preset", "tiny", "-n", "0"], "--num-captions"),
        (["caption", "{image}", "--checkpoint", "{missing}"], "not a UAPT checkpoint"),
        (["caption", "{image}", "--preset", "paper"], "preset 'paper' cannot be loaded here"),
    ],
)
def test_caption_errors_are_one_line(argv, message, image_files, tmp_path, capsys) -> None:
    paths = {"image": str(image_files[0]), "missing": str(tmp_path / "nope.png")}
    code = _run([arg.format(**paths) for arg in argv])
    assert isinstance(code, str) and code.startswith("uapt ") and message in code and "\n" not in code


def test_model_info_counts_trainable_and_frozen(capsys: pytest.CaptureFixture) -> None:
    assert _run(["model", "info", "--preset", "tiny", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    model = tiny_model()
    trainable = sum(p.numel() for p in model.trainable_parameters())
    frozen = sum(p.numel() for m in model.frozen_modules() for p in m.parameters())
    assert f"trainable parameters: {trainable:,}" in out
    assert f"frozen parameters:    {frozen:,}" in out


def test_a_damaged_scene_reader_is_a_one_line_error(image_files: list[Path], tmp_path: Path) -> None:
    checkpoint = save_checkpoint(tiny_model(), tmp_path / "ckpt")
    (checkpoint / "scene_reader.json").write_text("{not json")
    code = _run(["caption", str(image_files[0]), "--checkpoint", str(checkpoint), "--max-new-tokens", "3"])
    assert isinstance(code, str) and code.startswith("uapt caption: ") and "scene reader" in code and "\n" not in code


def test_caption_format_json_is_one_object_per_image_with_scores(
    image_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from ood_fixtures import checkpoint_with_ood

    checkpoint = checkpoint_with_ood(tiny_model(), tmp_path / "ckpt")
    argv = ["caption", *map(str, image_files), "--checkpoint", str(checkpoint), "--max-new-tokens", "3", "-n", "2"]
    assert _run([*argv, "--format", "json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["image"] for r in records] == [str(p) for p in image_files]
    for record in records:
        assert set(record) == {"image", "abstained", "reason", "ood_score", "confidence", "captions"}
        assert record["abstained"] is False and record["reason"] is None and isinstance(record["ood_score"], float)
        assert len(record["captions"]) == 2
        assert all(set(c) == {"text", "score", "confidence"} and 0 <= c["confidence"] <= 1 for c in record["captions"])
    assert _run([*argv, "--format", "json", "--max-ood-score", "-1"]) == 0  # every image unlike the fitting ones
    abstained = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(r["abstained"] and r["reason"] == "out_of_distribution" and r["captions"] == [] for r in abstained)
