"""The serving dtype of the frozen LM: the setting, int8 and bfloat16 on the tiny preset, auto's choice, the quality record."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

import model.serving_dtype as serving
from model.checkpoint import save_checkpoint, weights_sha256
from model.config import ConfigError, DecodingOptions, ServingDtypeError, check_serving_dtype
from model.factory import load_model
from model.serving_dtype import (
    RECORD_FILE,
    QualityBounds,
    ServingRecord,
    apply_serving_dtype,
    compare_quality,
    lm_dtype_name,
    read_record,
    write_record,
)
from model_fixtures import sample_images, tiny_model

FLOAT32 = {"content_scene": 0.90, "content_object": 0.80, "wrong_scene_rate": 0.08, "CIDEr": 1.80}


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    return save_checkpoint(tiny_model(), tmp_path / "ckpt")


@pytest.fixture(autouse=True)
def lm_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder of the test's own, so that no test reads a timing another kept."""
    monkeypatch.setattr(serving, "lm_cache_dir", lambda: tmp_path / "lm-cache")
    return tmp_path / "lm-cache"


def fresh_model() -> torch.nn.Module:
    """The tiny model with a float32 LM of its own, for a test to change."""
    return load_model("tiny", device="cpu", serving_dtype="float32")


def record_for(checkpoint: Path, bfloat16_holds: bool) -> ServingRecord:
    bfloat16 = {**FLOAT32, "content_scene": FLOAT32["content_scene"] - (0.005 if bfloat16_holds else 0.05)}
    return ServingRecord(
        weights_sha256=weights_sha256(checkpoint),
        float32=FLOAT32,
        dtypes={"bfloat16": compare_quality(bfloat16, FLOAT32, QualityBounds())},
        measured={"posts": 900, "split": "test"},
    )


def timer_where_faster(winner: str):
    """A stand-in for auto's timing decode that finds `winner` faster than the others, and records what it timed."""

    def timer(_model, lms) -> dict[str, float]:
        timer.timed = sorted(lms)
        return {name: 1.0 if name == winner else 2.0 for name in lms}

    timer.timed = None
    return timer


def refuse_timing(_model, _lms) -> dict[str, float]:
    raise AssertionError("auto timed dtypes without a record that lets it")


# the setting


def test_the_setting_takes_the_four_names_and_refuses_others() -> None:
    for name in ("auto", "float32", "bfloat16", "int8"):
        assert check_serving_dtype(name) == name
    with pytest.raises(ServingDtypeError, match="serving_dtype must be one of auto, float32, bfloat16, int8, got 'fp8'"):
        check_serving_dtype("fp8")


def test_load_model_refuses_a_bad_setting_and_a_whole_model_dtype_beside_it() -> None:
    with pytest.raises(ServingDtypeError, match="serving_dtype"):
        load_model("tiny", device="cpu", serving_dtype="float16")
    with pytest.raises(ConfigError, match="not both"):
        load_model("tiny", device="cpu", dtype="float32", serving_dtype="float32")


def test_int8_on_a_gpu_is_a_clear_error() -> None:
    on_gpu = SimpleNamespace(device=torch.device("cuda"))  # refused before the LM is touched
    with pytest.raises(ServingDtypeError, match="int8 .* CPU only"):
        apply_serving_dtype(on_gpu, "int8", None)


# the dtypes on the tiny preset


def test_int8_quantizes_the_lm_decodes_and_leaves_the_trained_prefix_float32() -> None:
    model = load_model("tiny", device="cpu", serving_dtype="int8")
    quantized = [name for name, module in model.lm.named_modules() if isinstance(module, DynamicQuantizedLinear)]
    assert "lm_head" in quantized  # tiny's GPT-2 blocks use Conv1D; SmolLM2's projections are nn.Linear too
    assert lm_dtype_name(model.lm) == "int8"
    reference = tiny_model().prefix.state_dict()
    for name, weight in model.prefix.state_dict().items():
        assert weight.dtype == torch.float32 and torch.equal(weight, reference[name]), name
    features = model.encode_images(sample_images(3))
    context = model.encode_context(["beach sunset", "", "coffee"])
    for decoding in (DecodingOptions(max_new_tokens=5), DecodingOptions(num_beams=1, max_new_tokens=5)):
        captions = model.generate(features, context, decoding)  # beam search and greedy, with the KV cache
        assert [len(image) for image in captions] == [decoding.n_best] * 3
        assert all(isinstance(c.text, str) and c.token_ids for image in captions for c in image)


def test_bfloat16_casts_only_the_lm_and_warns_on_a_cpu_without_native_bfloat16(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: False)
    model = fresh_model()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="model.serving_dtype"):
        assert apply_serving_dtype(model, "bfloat16", None) == "bfloat16"
    warning, chosen = caplog.records
    assert warning.levelname == "WARNING" and "without AVX512-BF16 or AMX" in warning.message
    assert chosen.levelname == "INFO" and "decodes in bfloat16" in chosen.message
    assert lm_dtype_name(model.lm) == "bfloat16"
    assert all(p.dtype == torch.float32 for p in model.prefix.parameters())
    assert all(p.dtype == torch.float32 for p in model.image_encoder.parameters())
    features = model.encode_images(sample_images(2))
    assert len(model.generate(features, model.encode_context(["a", ""]), DecodingOptions(max_new_tokens=3))) == 2


# auto


def test_auto_without_a_record_serves_float32_untimed(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: True)
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer=refuse_timing) == "float32"
    assert apply_serving_dtype(fresh_model(), "auto", None, timer=refuse_timing) == "float32"
    assert lm_dtype_name(load_model(None, checkpoint=checkpoint, device="cpu", serving_dtype="auto").lm) == "float32"


@pytest.mark.parametrize(("faster", "chosen"), [("bfloat16", "bfloat16"), ("float32", "float32")])
def test_auto_serves_a_recorded_dtype_only_where_it_is_faster_here(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, faster: str, chosen: str
) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: True)
    write_record(checkpoint, record_for(checkpoint, bfloat16_holds=True))
    model, timer = fresh_model(), timer_where_faster(faster)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="model.serving_dtype"):
        assert apply_serving_dtype(model, "auto", checkpoint, timer=timer) == chosen
    assert timer.timed == ["bfloat16", "float32"]
    assert lm_dtype_name(model.lm) == chosen
    [line] = [r.message for r in caplog.records]
    assert f"decodes in {chosen}" in line and "1.00 s in" in line and "2.00 s in" in line


def test_auto_keeps_float32_where_the_record_says_bfloat16_does_not_hold(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: True)
    write_record(checkpoint, record_for(checkpoint, bfloat16_holds=False))
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer=refuse_timing) == "float32"


def test_auto_keeps_float32_on_a_cpu_without_native_bfloat16(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: False)
    write_record(checkpoint, record_for(checkpoint, bfloat16_holds=True))
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer=refuse_timing) == "float32"


def test_auto_times_once_on_a_kind_of_machine_and_reads_its_choice_after(
    checkpoint: Path, lm_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: True)
    write_record(checkpoint, record_for(checkpoint, bfloat16_holds=True))
    timer = timer_where_faster("bfloat16")
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer=timer) == "bfloat16"
    assert timer.timed == ["bfloat16", "float32"]
    [kept] = (lm_cache / serving.TIMING_DIR).iterdir()
    model = fresh_model()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="model.serving_dtype"):
        assert apply_serving_dtype(model, "auto", checkpoint, timer=refuse_timing) == "bfloat16"
    assert lm_dtype_name(model.lm) == "bfloat16"
    [line] = [r.message for r in caplog.records]
    assert f"kept in {kept}" in line and "1.00 s in bfloat16" in line

    other_cpu = {**serving.cpuinfo_fields(), "model name": "another CPU"}
    monkeypatch.setattr(serving, "cpuinfo_fields", lambda: other_cpu)
    timer = timer_where_faster("float32")
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer=timer) == "float32"
    assert timer.timed == ["bfloat16", "float32"]  # another kind of machine is timed afresh


def test_a_damaged_timing_is_timed_again_and_an_unwritable_folder_only_costs_the_timing(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving, "cpu_has_fast_bfloat16", lambda: True)
    write_record(checkpoint, record_for(checkpoint, bfloat16_holds=True))
    folder = tmp_path / "timings"
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer_where_faster("bfloat16"), folder) == "bfloat16"
    [kept] = folder.iterdir()
    kept.write_text('{"seconds": {"float32": 1.0}}')
    timer = timer_where_faster("float32")
    assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer, folder) == "float32"
    assert timer.timed == ["bfloat16", "float32"]
    assert json.loads(kept.read_text())["seconds"] == {"bfloat16": 2.0, "float32": 1.0}

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    for _ in range(2):
        timer = timer_where_faster("bfloat16")
        assert apply_serving_dtype(fresh_model(), "auto", checkpoint, timer, blocked / "timings") == "bfloat16"
        assert timer.timed == ["bfloat16", "float32"]


# the record


def test_the_record_round_trips(checkpoint: Path) -> None:
    record = record_for(checkpoint, bfloat16_holds=True)
    assert write_record(checkpoint, record) == checkpoint / RECORD_FILE
    assert read_record(checkpoint) == record
    assert read_record(checkpoint).holding() == ("bfloat16",)


def test_a_record_of_other_weights_is_ignored_and_a_damaged_one_refused(checkpoint: Path) -> None:
    assert read_record(checkpoint) is None
    write_record(checkpoint, replace(record_for(checkpoint, bfloat16_holds=True), weights_sha256="0" * 64))
    assert read_record(checkpoint) is None  # measured with weights this checkpoint no longer holds
    (checkpoint / RECORD_FILE).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ServingDtypeError, match=RECORD_FILE):
        read_record(checkpoint)


def test_quality_holds_within_the_bounds_only() -> None:
    bounds = QualityBounds()
    assert compare_quality({**FLOAT32, "content_object": 0.785, "CIDEr": 1.75}, FLOAT32, bounds).holds
    assert not compare_quality({**FLOAT32, "wrong_scene_rate": 0.105}, FLOAT32, bounds).holds  # 0.025 off
    assert not compare_quality({**FLOAT32, "CIDEr": 1.74}, FLOAT32, bounds).holds  # 3.3% below
    quality = compare_quality({**FLOAT32, "CIDEr": 1.89}, FLOAT32, bounds)  # 5% above: a change, not a match
    assert not quality.holds and quality.deltas["CIDEr"] == pytest.approx(0.05)
    unlabelled = {"content_scene": None, "content_object": None, "wrong_scene_rate": None}
    assert compare_quality({**unlabelled, "CIDEr": 1.8}, {**unlabelled, "CIDEr": 1.8}, bounds).holds
    assert not compare_quality({**FLOAT32, "content_scene": None}, FLOAT32, bounds).holds
