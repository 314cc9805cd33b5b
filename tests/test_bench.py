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


def test_generation_bench_checks_identity_with_image_word_guidance_on(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import generation
    from model.checkpoint import save_checkpoint
    from model.factory import load_model
    from model.guidance.tagger import TaggerFit, save_tagger
    from model.training.fit_tagger import fit_tagger

    model = load_model("tiny", device="cpu")
    path = save_checkpoint(model, tmp_path / "guided")
    fit = TaggerFit(min_count=5, steps=50, weight=5.0)
    captions = ["a red one" if i % 2 else "a blue one" for i in range(40)]
    images = generation.synthetic_images(40)
    tagger, figures = fit_tagger(model.encode_images(images), captions, model.tokenizer, fit)
    save_tagger(tagger, path, fit, figures)
    generation.main(["--checkpoint", str(path), "--batch", "3", "--max-new-tokens", "6", "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "image_word_guidance=on" in out and "guidance_cost=" in out
    assert "identical=true" in out and "speedup_vs_hf=skipped (image word guidance or scene constraint)" in out


def test_generation_bench_checks_identity_with_the_scene_constraint_on(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import generation
    from model.checkpoint import save_checkpoint
    from model.factory import load_model
    from model.guidance.scene_reader import SceneReaderFit, save_scene_reader
    from model.training.fit_scene_reader import fit_scene_reader

    model = load_model("tiny", device="cpu")
    path = save_checkpoint(model, tmp_path / "constrained")
    fit = SceneReaderFit(bands=1, min_count=5, steps=50, min_confidence=0.0)
    scenes = ["beach" if i % 2 else "city" for i in range(40)]
    images = generation.synthetic_images(40)
    reader, figures = fit_scene_reader(model.encode_images(images), scenes, [f"at the {s}" for s in scenes], model.tokenizer, fit)
    save_scene_reader(reader, path, fit, figures)
    generation.main(["--checkpoint", str(path), "--batch", "3", "--max-new-tokens", "6", "--repeats", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "scene_constraint=on (3 of 3 images)" in out and "constraint_cost=" in out
    assert "identical=true" in out and "speedup_vs_hf=skipped (image word guidance or scene constraint)" in out


def _write_paired_case(tmp_path):
    """A labelled dataset of five posts and two evaluate reports of them, with flips known by construction."""
    import json

    posts = [  # post_id, labels
        ("p1", {"scene": "beach", "objects": ["cat"], "on_topic_user": True}),
        ("p2", {"scene": "city", "objects": ["coffee"], "on_topic_user": True}),
        ("p3", {"scene": "forest", "objects": ["rocket"], "on_topic_user": True}),
        ("p4", {"scene": "beach", "objects": ["coffee"], "on_topic_user": False}),  # off topic: only the wrong-scene check
        ("p5", None),  # unlabelled: no check
    ]
    before = {"p1": "my kitty", "p2": "latte in the forest", "p3": "a rocket in the woods", "p4": "at the beach", "p5": "hi"}
    after = {"p1": "my kitty on the sand", "p2": "latte downtown", "p3": "a rocket", "p4": "in the city", "p5": "hi"}
    data = tmp_path / "data"
    data.mkdir()
    lines = [
        {"post_id": p, "user_id": "u1", "image": f"images/{p}.png", "text": "t", "split": "test", **({"labels": l} if l else {})}
        for p, l in posts
    ]
    (data / "posts.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    reports = []
    for name, best in (("before", before), ("after", after)):
        report = {"captions": [{"post_id": p, "nbest": [{"text": text, "score": -1.0}]} for p, text in best.items()]}
        (tmp_path / f"{name}.json").write_text(json.dumps(report), encoding="utf-8")
        reports.append(str(tmp_path / f"{name}.json"))
    return data, reports, before, after, posts


def test_paired_grounding_counts_the_posts_that_flip_each_way(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import paired_grounding
    from model.evaluation.grounding import content_scores

    data, (before_json, after_json), before, after, posts = _write_paired_case(tmp_path)
    paired_grounding.main([before_json, after_json, "--data", str(data)])
    out = capsys.readouterr().out.strip().splitlines()
    # scene: p1 and p2 gained it, p3 lost it ("woods" is a forest); object: nothing moved;
    # wrong scene: p2 lost it, p4 (off topic, still counted) gained it
    assert out[-1] == (
        "scene_gained=2 scene_lost=1 object_gained=0 object_lost=0 wrong_gained=1 wrong_lost=1 unchanged=1 scene_z=0.58"
    )
    rows = {cells[0]: cells for cells in (line.strip("| ").split(" | ") for line in out if line.startswith("| "))}
    labels = [l for _, l in posts]
    for side, column in ((before, 2), (after, 3)):  # both sides' shares are uapt evaluate's own figures
        figures = content_scores([side[p] for p, _ in posts], labels)
        for figure in ("content_scene", "content_object", "wrong_scene_rate"):
            assert float(rows[figure][column]) == pytest.approx(figures[figure], abs=5e-4)


def test_paired_grounding_refuses_reports_of_different_posts(tmp_path) -> None:
    import json
    from pathlib import Path

    from bench import paired_grounding

    data, (before_json, after_json), *_ = _write_paired_case(tmp_path)
    report = json.loads(Path(after_json).read_text(encoding="utf-8"))
    report["captions"] = report["captions"][:-1]  # one post fewer than the baseline
    Path(after_json).write_text(json.dumps(report), encoding="utf-8")
    with pytest.raises(SystemExit) as refused:
        paired_grounding.main([before_json, after_json, "--data", str(data)])
    assert refused.value.code == 2


def test_train_scale_measures_each_size_in_its_own_processes(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import train_scale

    train_scale.main(["--sizes", "20", "40", "--steps", "2", "--batch-size", "4", "--extract-batch", "8", "--workers", "1", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    found = re.fullmatch(
        r"rss_growth_40_vs_20=(\d+\.\d+) step_time_growth_40_vs_20=(\d+\.\d+) "
        r"extract_vs_bare_encoder=(\d+\.\d+) extract_images_per_s=(\d+\.\d+)",
        lines[-1],
    )
    assert found, lines[-1]
    assert all(float(value) > 0 for value in found.groups())
    assert [line.split(" posts")[0] for line in lines[1:-1]] == ["20", "40"]
    assert not list(tmp_path.iterdir())  # the datasets and stores were temporary


@pytest.fixture
def tiny_checkpoint_and_data(tmp_path):
    from model.checkpoint import save_checkpoint
    from model.data.synth import write_dataset

    data = write_dataset(tmp_path / "data", users=2, posts_per_user=10, seed=1)
    return save_checkpoint(load_model("tiny", device="cpu"), tmp_path / "ckpt"), data


@pytest.mark.slow  # Java scores each dtype's captions (CIDEr): about a minute on two cores
def test_serving_dtype_bench_measures_every_dtype_against_float32_and_ends_with_autos_pick(
    tiny_checkpoint_and_data, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import serving_dtype

    checkpoint, data = tiny_checkpoint_and_data
    serving_dtype.main(["--data", str(data), "--checkpoint", str(checkpoint), "--limit", "2", "--device", "cpu",
                        "--cache-dir", str(tmp_path / "cache")])
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"auto_dtype=(float32|bfloat16|int8) speedup_auto_vs_float32=\d+\.\d\d quality_ok=(true|false)", lines[-1])
    assert "posts=2 " in lines[0] and "cpu='" in lines[0]
    measured = {line.split(":")[0] for line in lines if ": captions_per_s=" in line}
    assert measured == set(serving_dtype.measured_dtypes(torch.device("cpu")))
    assert not (checkpoint / "serving_dtypes.json").exists()  # only --write-record writes it


@pytest.mark.slow  # as above
def test_serving_dtype_bench_writes_the_record_that_auto_reads(tiny_checkpoint_and_data, tmp_path) -> None:
    from bench import serving_dtype
    from model.serving_dtype import read_record

    checkpoint, data = tiny_checkpoint_and_data
    serving_dtype.main(["--data", str(data), "--checkpoint", str(checkpoint), "--device", "cpu", "--write-record",
                        "--cache-dir", str(tmp_path / "cache")])
    record = read_record(checkpoint)
    assert record is not None and set(record.dtypes) == set(serving_dtype.measured_dtypes(torch.device("cpu"))) - {"float32"}
    assert record.measured["split"] == "test" and record.float32["CIDEr"] is not None


def test_serving_dtype_bench_writes_no_record_from_part_of_the_split(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import serving_dtype

    with pytest.raises(SystemExit) as refused:
        serving_dtype.main(["--limit", "8", "--write-record"])
    assert refused.value.code == 2 and "--write-record needs the whole split" in capsys.readouterr().err


def test_serving_dtype_bench_measures_the_dtypes_asked_even_where_they_are_not_native(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench import serving_dtype

    cpu = torch.device("cpu")
    assert serving_dtype.measured_dtypes(cpu, ["bfloat16", "float32", "bfloat16"]) == ("float32", "bfloat16")
    assert serving_dtype.measured_dtypes(cpu, ["int8"]) == ("float32", "int8")
    with pytest.raises(SystemExit) as refused:
        serving_dtype.main(["--dtypes", "bfloat16,float8"])
    assert refused.value.code == 2 and "--dtypes: unknown float8" in capsys.readouterr().err


def test_startup_timeline_puts_each_worker_log_line_at_its_seconds_since_launch(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import datetime

    from bench.startup import print_timeline

    log = ("2026-12-06 22:00:01,250 INFO worker.http: metrics on :9108\n"
           "Loading weights: 100%|####| 272/272\n"
           "2026-12-06 22:00:12,500 INFO worker.loop: assigned partitions [...]\n")
    print_timeline(log, datetime.datetime(2026, 12, 6, 22, 0, 0))
    assert capsys.readouterr().out.splitlines() == [
        "worker log, seconds since launch:",
        "    1.25  INFO worker.http: metrics on :9108",
        "   12.50  INFO worker.loop: assigned partitions [...]",
    ]


def test_worker_bench_runs_the_pipelined_run_alone_and_ends_with_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    """Through the real embedded broker: the runs asked for, bare generation, and the machine-readable last line."""
    from bench import worker

    worker.main(["--preset", "tiny", "--device", "cpu", "--posts", "6", "--users", "2", "--batch-size", "3",
                 "--runs", "pipelined"])
    lines = capsys.readouterr().out.splitlines()
    assert "device=cpu" in lines[0] and "posts=6" in lines[0]
    assert not any(line.startswith(("batch_size=1:", "speed-up")) for line in lines)  # single and sequential skipped
    assert re.fullmatch(r"posts_per_s=\S+ p50_ms=\d+ p99_ms=\d+ batch_mean=\S+ pipeline_efficiency=\S+", lines[-1])
    with pytest.raises(SystemExit):
        worker.main(["--preset", "tiny", "--runs", "pipelined,fastest"])


def test_abstention_bench_scores_a_reports_captions_and_decodes_only_the_ood_images(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The split's n-best come from the report as written (never decoded again); the OOD folder's images are decoded."""
    import json

    from PIL import Image

    from bench import abstention
    from model.config import DecodingOptions
    from model.data.dataset import load_posts
    from model.data.synth import write_dataset
    from ood_fixtures import checkpoint_with_ood

    data = write_dataset(tmp_path / "data", users=2, posts_per_user=10, seed=1)
    checkpoint = checkpoint_with_ood(load_model("tiny", device="cpu"), tmp_path / "ckpt")
    test_posts = [r for r in load_posts(data) if r.split == "test"]
    report = tmp_path / "eval.json"
    report.write_text(json.dumps({
        "split": "test",
        "decoding": DecodingOptions(num_beams=2, max_new_tokens=4).to_dict(),
        "captions": [{"post_id": r.post_id, "nbest": [{"text": f"written caption {i}", "score": -1.0 - i}]}
                     for i, r in enumerate(test_posts)],
    }))
    ood_dir = tmp_path / "ood"
    ood_dir.mkdir()
    for i, colour in enumerate(["black", "white"]):
        Image.new("RGB", (48, 48), colour).save(ood_dir / f"solid-{i}.png")
    (ood_dir / "ood_set.json").write_text(json.dumps({"solid-0.png": "solid", "solid-1.png": "solid"}))
    out = tmp_path / "figures.json"

    assert abstention.main(["--data", str(data), "--checkpoint", str(checkpoint), "--captions", str(report),
                            "--ood-dir", str(ood_dir), "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == figures
    assert figures["posts"] == len(test_posts) > 0 and figures["split"] == "test"
    assert figures["ood_images"] == 2 and figures["ood_by_kind"]["solid"]["images"] == 2
    assert set(figures["ood_best_captions"]) == {"solid-0.png", "solid-1.png"}
    assert 0.0 <= figures["ood_auroc"] <= 1.0


def test_worker_bench_with_the_null_model_measures_the_worker_around_it(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import worker

    worker.main(["--preset", "tiny", "--posts", "6", "--users", "2", "--batch-size", "3", "--runs", "pipelined",
                 "--null-model"])
    lines = capsys.readouterr().out.splitlines()
    assert "model=null" in lines[0]
    assert not any(line.startswith("bare generation") for line in lines)
    assert re.fullmatch(r"posts_per_s=\S+ p50_ms=\d+ p99_ms=\d+ batch_mean=\S+ model=null", lines[-1])
