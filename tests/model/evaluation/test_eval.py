"""evaluate_checkpoint end to end on the tiny preset, and the CLI's one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.config import DecodingOptions
from model.data.dataset import load_posts
from model.evaluation.evaluate import EvalOptions, evaluate_checkpoint, read_best_captions
from model.evaluation.metrics import METRIC_NAMES
from model.training.train_config import TrainConfig
from model.training.trainer import train
from cli.main import main
from model_fixtures import FakeDtypeTimings, pretend_auto_times_both_dtypes


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, small_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    train(load_posts(small_dataset), preset="tiny", out_dir=out, config=TrainConfig(epochs=1, batch_size=20),
          cache_dir=out / "cache")
    return out


def test_evaluate_reports_metrics_and_personalization(trained: Path, small_dataset: Path) -> None:
    posts = load_posts(small_dataset)
    report = evaluate_checkpoint(posts, trained, options=EvalOptions(decoding=DecodingOptions(num_beams=2), limit=5), cache_dir=trained / "cache")
    assert report.posts == 5 and report.split == "test"
    assert set(report.metrics) == set(METRIC_NAMES)
    assert 0.0 <= report.personalization <= 1.0
    # The synthetic users' own test captions are mostly closest to their own train captions.
    assert report.personalization_ceiling >= 0.6
    assert [c["reference"] for c in report.captions] == [p.text for p in posts if p.split == "test"][:5]
    assert all(len(c["nbest"]) == 2 and c["nbest"][0]["score"] >= c["nbest"][1]["score"] for c in report.captions)
    assert "| BLEU-1 |" in report.markdown()
    assert report.serving_dtype == "float32"  # auto, and the checkpoint has no quality record
    # the decoding as applied, under the keys reports have always had (no tagger: weight 0; no reader: no constraint)
    assert report.to_dict()["decoding"] == {
        "num_beams": 2, "temperature": 0.8, "no_repeat_ngram_size": 3, "repetition_penalty": 1.2,
        "image_word_weight": 0.0, "scene_constraint": False,
    }


def test_cold_start_evaluation_captions_every_post_without_keywords(trained: Path, small_dataset: Path) -> None:
    posts = load_posts(small_dataset)
    options = EvalOptions(decoding=DecodingOptions(num_beams=2), limit=4)
    usual = evaluate_checkpoint(posts, trained, options=options, cache_dir=trained / "cache")
    cold = evaluate_checkpoint(posts, trained, options=EvalOptions(decoding=DecodingOptions(num_beams=2), limit=4, cold_start=True),
                               cache_dir=trained / "cache")
    assert cold.cold_start and not usual.cold_start
    assert all(c["keywords"] == [] for c in cold.captions) and any(c["keywords"] for c in usual.captions)
    assert [c["nbest"] for c in cold.captions] != [c["nbest"] for c in usual.captions]  # the context did change
    assert "every user new" in cold.markdown()


def test_cli_evaluate_writes_json(trained: Path, small_dataset: Path, capsys: pytest.CaptureFixture) -> None:
    out = trained / "report.json"
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(trained), "--limit", "2",
              "--num-beams", "1", "--cache-dir", str(trained / "cache"), "--out", str(out), "--serving-dtype", "int8"])
    assert done.value.code == 0
    written = json.loads(out.read_text())
    assert written["posts"] == 2 and written["serving_dtype"] == "int8"
    assert "CIDEr" in capsys.readouterr().out
    assert read_best_captions(out) == {c["post_id"]: c["nbest"][0]["text"] for c in written["captions"]}


def test_cli_errors_are_one_line(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(SystemExit, match=r"^uapt train: .*no posts.jsonl"):
        main(["train", "--data", str(tmp_path), "--preset", "tiny", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match=r"^uapt evaluate: .*not a UAPT checkpoint"):
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"^uapt ablate: variants: unknown"):
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--only", "no_such"])


@pytest.mark.parametrize("flag, value", [("--limit", "-5"), ("--limit", "0"), ("--keywords", "0")])
def test_cli_evaluate_refuses_counts_below_one(tmp_path: Path, small_dataset: Path, flag: str, value: str) -> None:
    # -5 used to score every post but the last five, and --keywords 0 fell back to the trained k, both silently
    name = {"--limit": "limit", "--keywords": "keywords_k"}[flag]
    with pytest.raises(SystemExit, match=rf"^uapt evaluate: {name} must be at least 1, got {value}$"):
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(tmp_path), flag, value])


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
    # every cell is mean ± sd over the 2 seeds: BLEU-4, METEOR, ROUGE-L, CIDEr, personalization, content_scene/object
    assert rows["UAPT (full)"].count(" ± ") == 7
    assert "- CIDEr, UAPT (full) / w/o context: " in table and (out / "curves.png").is_file()

    summary = json.loads((out / "ablation.json").read_text())
    assert [run["init_seed"] for run in summary["full"]] == [0, 1]
    assert "captions" not in summary["full"][0]  # the summary keeps figures; captions stay in each run's folder
    run = json.loads((out / "full-init0" / "run.json").read_text())
    assert len(run["captions"]) == 2
    assert run["machine"]["device"] == "cpu" and run["data"]["posts"] == 60  # where and on what it was made
    configs = [json.loads((out / f"full-init{seed}" / "config.json").read_text())["config"] for seed in (0, 1)]
    assert [c["init_seed"] for c in configs] == [0, 1]
    weights = [(out / f"full-init{seed}" / "trainable.safetensors").read_bytes() for seed in (0, 1)]
    assert weights[0] != weights[1]

    # --resume: finished runs are read back, not redone; a run without its run.json is done again
    (out / "no_context-init1" / "run.json").unlink()
    kept = {run: (out / run / "run.json").stat().st_mtime_ns for run in ("full-init0", "full-init1", "no_context-init0")}
    with pytest.raises(SystemExit) as again:
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--only", "full", "no_context",
              "--init-seeds", "0", "1", "--epochs", "1", "--batch-size", "20", "--num-beams", "1", "--limit", "2",
              "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--resume"])
    assert again.value.code == 0
    assert capsys.readouterr().out == table
    assert {run: (out / run / "run.json").stat().st_mtime_ns for run in kept} == kept
    assert (out / "no_context-init1" / "run.json").is_file()


def test_ablate_trains_every_run_in_the_dtype_the_first_one_timed(
    tmp_path: Path, small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a CPU with native bfloat16, auto times both dtypes; variants that trained in different ones would not compare."""
    from model import device
    from model.training import ablate

    pretend_auto_times_both_dtypes(monkeypatch)
    timings = FakeDtypeTimings(torch.bfloat16, torch.float32, torch.float32, torch.float32)  # it flips after the first
    monkeypatch.setattr(device, "time_lm_dtypes", timings)
    out = tmp_path / "ablate"
    ablate.run_ablation(load_posts(small_dataset), preset="tiny", out_dir=out, config=TrainConfig(epochs=1, batch_size=20),
                        options=EvalOptions(decoding=DecodingOptions(num_beams=1), limit=1), cache_dir=tmp_path / "cache",
                        variants=["full", "no_context"], init_seeds=(0, 1))
    dtypes = {run.name: json.loads((run / "metrics.json").read_text())["lm_dtype"] for run in out.iterdir() if run.is_dir()}
    assert dtypes == {f"{variant}-init{seed}": "bfloat16" for variant in ("full", "no_context") for seed in (0, 1)}
    assert timings.calls == 1


def test_ablate_refuses_repeated_init_seeds(tmp_path: Path, small_dataset: Path) -> None:
    with pytest.raises(SystemExit, match=r"^uapt ablate: init seeds must be distinct"):
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--init-seeds", "1", "1",
              "--out", str(tmp_path / "o")])


def _report(trained: Path, small_dataset: Path, path: Path):
    posts = load_posts(small_dataset)
    options = EvalOptions(decoding=DecodingOptions(num_beams=2), limit=4)
    return evaluate_checkpoint(posts, trained, options=options, cache_dir=trained / "cache", report_path=path)


def test_evaluate_reports_grounding_and_sameness(trained: Path, small_dataset: Path) -> None:
    report = _report(trained, small_dataset, trained / "r.html")
    data = report.to_dict()
    for key in ("content_scene", "content_object", "wrong_scene_rate", "repeat_3gram_rate", "distinct_per_user",
                "personalization", "personalization_ceiling"):
        assert key in data
    assert "CIDEr" in data["metrics"]
    assert report.gradable_posts > 0 and 0.0 <= report.content_scene <= 1.0
    assert 0.0 < report.distinct_per_user <= 1.0


def test_html_report_embeds_every_image_with_its_captions(trained: Path, small_dataset: Path) -> None:
    from html.parser import HTMLParser

    page = trained / "page.html"
    report = _report(trained, small_dataset, page)

    class Counter(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.figures, self.images, self.items = 0, [], 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            self.figures += tag == "figure"
            self.items += tag == "li"
            if tag == "img":
                self.images.append(attrs["src"])

    parser = Counter()
    parser.feed(page.read_text(encoding="utf-8"))
    assert parser.figures == report.posts == 4
    assert len(parser.images) == 4 and all(src.startswith("data:image/jpeg;base64,") for src in parser.images)
    assert parser.items == 4 * 2  # the n-best list of each post (beam 2)
    assert "content_scene" in page.read_text(encoding="utf-8")


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(trained: Path, small_dataset: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed (CI installs Debian's chromium)")
    page = tmp_path / "page.html"
    _report(trained, small_dataset, page)
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count('class="post"') == 4 and "content_scene" in dom.stdout
    shot = tmp_path / "shot.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,900", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 500  # the embedded photos rendered, not a blank page


def test_cli_fit_image_words_then_evaluate_records_the_weight(
    trained: Path, small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from model.guidance.tagger import META_FILE

    guided = Path(shutil.copytree(trained, tmp_path / "guided", ignore=shutil.ignore_patterns("cache")))
    cache = ["--cache-dir", str(trained / "cache")]
    with pytest.raises(SystemExit) as done:
        main(["fit-image-words", "--data", str(small_dataset), "--checkpoint", str(guided), "--min-count", "2",
              "--steps", "20", "--weight", "1.5", *cache])
    assert done.value.code == 0 and (guided / META_FILE).is_file()
    assert json.loads(capsys.readouterr().out)["words"] > 0
    for extra, weight in (([], 1.5), (["--image-word-weight", "0"], 0.0)):
        out = tmp_path / f"eval-{weight}.json"
        with pytest.raises(SystemExit):
            main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(guided), "--limit", "2", "--num-beams", "1",
                  "--out", str(out), *cache, *extra])
        assert json.loads(out.read_text())["decoding"]["image_word_weight"] == weight
    with pytest.raises(SystemExit, match=r"^uapt fit-image-words: no caption word is used by 100000 captions"):
        main(["fit-image-words", "--data", str(small_dataset), "--checkpoint", str(guided), "--min-count", "100000", *cache])


def test_personalization_unseen_scores_users_the_checkpoint_never_saw(
    trained: Path, small_dataset: Path, tmp_path: Path
) -> None:
    from model.data.dataset import DatasetError
    from model.data.synth import HELDOUT_DIR, write_dataset

    posts = load_posts(small_dataset)
    # same arguments as small_dataset, plus 3 users drawn after its 6: a dataset of users it never trained on
    unseen = load_posts(write_dataset(tmp_path, users=6, posts_per_user=10, seed=7, heldout_users=3) / HELDOUT_DIR)
    options = EvalOptions(decoding=DecodingOptions(num_beams=1), limit=6)
    plain = evaluate_checkpoint(posts, trained, options=options, cache_dir=trained / "cache")
    assert plain.personalization_unseen is None and plain.unseen_users is None
    report = evaluate_checkpoint(posts, trained, options=options, cache_dir=trained / "cache", unseen_records=unseen)
    assert report.unseen_users == 3  # 6 test posts: the first 3 users' 2 each
    assert report.personalization_unseen is not None and 0.0 <= report.personalization_unseen <= 1.0
    assert report.personalization_unseen * 6 == round(report.personalization_unseen * 6)  # a share of 6 captions
    assert "personalization_unseen" in report.to_dict() and "personalization_unseen" in report.markdown()
    with pytest.raises(DatasetError, match="also in the evaluated dataset"):
        evaluate_checkpoint(posts, trained, options=options, cache_dir=trained / "cache", unseen_records=posts)


def test_cli_fit_ood_then_evaluate_with_an_ood_dir(
    trained: Path, small_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import shutil

    from PIL import Image

    from model.guidance.ood import NAME
    from model.guidance.storage import readout_files

    checkpoint = Path(shutil.copytree(trained, tmp_path / "guarded", ignore=shutil.ignore_patterns("cache", "ood.*")))
    cache = ["--cache-dir", str(trained / "cache")]
    # the val captions to calibrate on: each post's own text (right where its user writes about the image), then a wrong one
    val = [r for r in load_posts(small_dataset) if r.split == "val"]
    nbest = [{"post_id": r.post_id, "nbest": [{"text": r.text, "score": -0.5}, {"text": "a plate of soup", "score": -1.5}]} for r in val]
    (tmp_path / "val.json").write_text(json.dumps({"captions": nbest}))
    with pytest.raises(SystemExit) as done:
        main(["fit-ood", "--data", str(small_dataset), "--checkpoint", str(checkpoint), "--val-captions", str(tmp_path / "val.json"),
              "--dims", "8", "--k", "3", *cache])
    assert done.value.code == 0 and (checkpoint / readout_files(NAME)[1]).is_file()
    figures = json.loads(capsys.readouterr().out)
    assert figures["calibration_captions"] == 2 * figures["calibration_posts"] and 0 < figures["val_right_share"] <= 0.5
    ood_dir = tmp_path / "ood"
    ood_dir.mkdir()
    for i, colour in enumerate(((0, 0, 0), (255, 255, 255), (30, 60, 200))):
        Image.new("RGB", (64, 64), colour).save(ood_dir / f"solid-{i}.png")
    out, page = tmp_path / "eval.json", tmp_path / "eval.html"
    with pytest.raises(SystemExit):
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(checkpoint), "--limit", "4", "--num-beams", "2",
              "--ood-dir", str(ood_dir), "--out", str(out), "--report", str(page), *cache])
    report = json.loads(out.read_text())
    assert 0 <= report["ood_auroc"] <= 1 and 0 <= report["ood_fpr95"] <= 1 and 0 <= report["ece"] <= 1
    assert 0 <= report["coverage"] <= 1 and {"content_scene", "content_object", "wrong_scene_rate"} <= set(report["selective"])
    assert report["abstention"]["ood_set"]["ood_images"] == 3 and report["abstention"]["risk_coverage"]
    assert 'class="risk-coverage"' in page.read_text()
    with pytest.raises(SystemExit, match=r"^uapt evaluate: ood_dir: .* holds no images"):
        main(["evaluate", "--data", str(small_dataset), "--checkpoint", str(checkpoint), "--limit", "2",
              "--ood-dir", str(tmp_path / "empty"), *cache])
