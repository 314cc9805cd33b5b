"""The Table 3 ablation around its runs: one machine and one dataset per table, the table and its targets,
the learning curves, the aided row, and processes that share one --out.

Training and scoring are replaced by fakes that write what the real ones write (config.json's
checksum, metrics.json, a report), so these tests check the orchestration in milliseconds;
tests/model/evaluation/test_eval.py runs the real thing on the tiny preset.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import model.device
from model.config import DecodingOptions
from model.data.dataset import PostRecord, dataset_identity
from model.evaluation.evaluate import EvalOptions, EvalReport
from model.evaluation.metrics import METRIC_NAMES
from model.training import ablate, machine
from model.training.curves import draw_ablation_curves, mean_curve
from model.training.trainer import TrainingError, TrainResult

CIDER = {"full": 1.60, "no_context": 1.00, "no_mapping": 1.50, "no_fusion": 1.40, "no_query": 1.55, "full_aids": 1.70}
PERSONALIZATION = {"full": 0.90, "no_context": 0.60, "no_mapping": 0.88, "no_fusion": 0.85, "no_query": 0.89,
                   "full_aids": 0.87}
CPU = {"device": "cpu", "gpu": None, "cpu": "AMD EPYC (family 25, model 17)", "cpu_flags": ["avx2", "avx512_bf16"],
       "cores": 2, "torch": "2.14.1"}
REPO = Path(__file__).resolve().parents[3]
H100 = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "cpu": "Intel Xeon (family 6, model 143)",
        "cpu_flags": ["avx2", "avx512_bf16", "amx_bf16"], "cores": 16, "torch": "2.11.0"}


def posts(users: int = 2, text: str = "a day at the beach") -> list[PostRecord]:
    """Four posts a user (two train, one val, one test); the images need not exist for these tests."""
    splits = ("train", "train", "val", "test")
    return [PostRecord(f"u{u}p{i}", f"u{u}", Path(f"/data/u{u}p{i}.png"), f"{text} {i}", split, {"scene": "beach"})
            for u in range(users) for i, split in enumerate(splits)]


def report(variant: str, seed: int, decoding: dict | None = None) -> EvalReport:
    """A report with the variant's figures, a little apart per seed."""
    metrics = {name: 0.1 + 0.01 * seed for name in METRIC_NAMES} | {"CIDEr": CIDER[variant] + 0.02 * seed}
    return EvalReport(
        checkpoint=variant, ablation=None, split="test", posts=2, metrics=metrics,
        personalization=PERSONALIZATION[variant] + 0.01 * seed, personalization_ceiling=0.95, gradable_posts=2,
        content_scene=0.5, content_object=0.2 * (1 + seed), wrong_scene_rate=0.0, repeat_3gram_rate=0.0,
        distinct_per_user=1.0, wall_s=0.1,
        decoding=decoding or {"num_beams": 3, "image_word_weight": 0.0, "scene_constraint": False},
    )


class FakeRuns:
    """`train` and `evaluate_checkpoint` as ablate calls them: each writes what the real one writes beside a run."""

    def __init__(self) -> None:
        self.trained: list[str] = []
        self.scored: list[str] = []

    def train(self, records, *, ablation, out_dir, init_seed, **_) -> TrainResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps({"sha256": f"{ablation}-{init_seed}-weights"}))
        val = [[1, 3.0 + init_seed], [2, 2.0 + init_seed]]
        probes = [[1, 0.1, 0.2 + 0.1 * init_seed], [2, 0.3, 0.4]]
        (out_dir / "metrics.json").write_text(json.dumps({"lm_dtype": "float32", "val_losses": val, "probes": probes}))
        self.trained.append(out_dir.name)
        return TrainResult(steps=2, wall_s=1.0, final_val_loss=val[-1][1], encoded_images=0, encoded_contexts=0)

    def evaluate(self, records, checkpoint, *, options, **_) -> EvalReport:
        variant, seed = checkpoint.name.rsplit("-init", 1)
        self.scored.append(checkpoint.name)
        # as the model applies them: aids where the folder has them, unless the options turn them off
        aided = (checkpoint / "image_words.json").is_file() and options.decoding.image_word_weight != 0
        return report(variant, int(seed), {"image_word_weight": 2.0, "scene_constraint": True} if aided else None)


@pytest.fixture
def fake_runs(monkeypatch: pytest.MonkeyPatch) -> FakeRuns:
    fakes = FakeRuns()
    monkeypatch.setattr(ablate, "train", fakes.train)
    monkeypatch.setattr(ablate, "evaluate_checkpoint", fakes.evaluate)
    monkeypatch.setattr(ablate, "describe_machine", lambda device: CPU)
    return fakes


def run(out: Path, records=None, options: EvalOptions = EvalOptions(), **kwargs):
    return ablate.run_ablation(posts() if records is None else records, preset="tiny", out_dir=out,
                               options=options, device="cpu", **kwargs)


def on_another_machine(monkeypatch: pytest.MonkeyPatch, other: dict = H100) -> None:
    monkeypatch.setattr(ablate, "describe_machine", lambda device: other)


# the machine and the data a run records


def test_a_cpu_is_known_by_its_model_and_bfloat16_flags_not_its_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    block = "processor\t: {n}\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: fpu avx2 sse avx512_bf16 avx512f\n"
    cpuinfo.write_text(block.format(n=0) + "\n" + block.format(n=1).replace("AMD EPYC", "other"))
    monkeypatch.setattr(model.device, "CPUINFO", cpuinfo)
    record = machine.describe_machine(torch.device("cpu"))
    assert record["cpu"] == "AMD EPYC (family 25, model 17)" and record["cpu_flags"] == ["avx2", "avx512_bf16"]
    assert machine.machine_kind(record) == {"device": "cpu", "cpu": "AMD EPYC (family 25, model 17)",
                                            "cpu_flags": ["avx2", "avx512_bf16"]}
    assert machine.machine_kind({**record, "cores": 64, "torch": "9"}) == machine.machine_kind(record)
    assert machine.machine_kind({**H100, "cpu": "another host"}) == machine.machine_kind(H100)  # on CUDA the GPU decides
    assert machine.kind_text(H100) == "cuda NVIDIA H100 80GB HBM3"


def test_the_dataset_identity_counts_the_splits_and_tells_datasets_apart() -> None:
    identity = dataset_identity(posts())
    assert {k: identity[k] for k in ("users", "posts", "splits")} == {
        "users": 2, "posts": 8, "splits": {"train": 4, "val": 2, "test": 2}}
    moved = [PostRecord(p.post_id, p.user_id, Path("/elsewhere") / p.image.name, p.text, p.split, p.labels) for p in posts()]
    assert dataset_identity(list(reversed(moved))) == identity  # another folder, another order: the same dataset
    assert dataset_identity(posts(text="a day at the lake"))["fingerprint"] != identity["fingerprint"]


def test_each_run_records_its_machine_and_data_and_the_table_its_setup(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, variants=["full", "no_context"])
    entry = json.loads((tmp_path / "full-init0" / "run.json").read_text())
    assert entry["machine"] == CPU and entry["data"] == dataset_identity(posts())
    assert json.loads((tmp_path / "setup.json").read_text()) == {"machine": CPU, "data": dataset_identity(posts())}
    assert json.loads((tmp_path / "ablation.json").read_text())["no_context"][0]["machine"] == CPU


def test_resume_on_another_kind_of_machine_is_refused_before_any_work(
    tmp_path: Path, fake_runs: FakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(tmp_path, variants=["full"])
    on_another_machine(monkeypatch)
    with pytest.raises(TrainingError) as refused:
        run(tmp_path, variants=["full", "no_context"], resume=True)
    message = str(refused.value)
    assert "cpu AMD EPYC (family 25, model 17) with avx2, avx512_bf16" in message
    assert "this machine on cuda NVIDIA H100 80GB HBM3" in message and "give another --out" in message
    assert fake_runs.trained == ["full-init0"]  # nothing trained on the second machine


def test_a_run_stopped_on_one_machine_is_not_finished_on_another(
    tmp_path: Path, fake_runs: FakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No run has finished yet, but setup.json says where the table began."""
    stop = threading.Event()
    stop.set()
    assert run(tmp_path, variants=["full"], stop=stop) is None
    assert json.loads((tmp_path / "setup.json").read_text())["machine"] == CPU
    on_another_machine(monkeypatch)
    with pytest.raises(TrainingError, match="setup.json was made on cpu .* and this machine on cuda"):
        run(tmp_path, variants=["full"], resume=True)


def test_other_data_is_refused_naming_both(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, variants=["full"])
    with pytest.raises(TrainingError) as refused:
        run(tmp_path, posts(users=3), variants=["full"], resume=True)
    message = str(refused.value)
    assert "2 users, 8 posts (4/2/2 train/val/test)" in message and "3 users, 12 posts (6/3/3 train/val/test)" in message
    assert "never mixes data" in message


def test_finished_runs_of_one_machine_make_a_table_on_another(
    tmp_path: Path, fake_runs: FakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table made on a GPU machine and copied back is read anywhere; only new work must match it."""
    on_another_machine(monkeypatch)
    table = run(tmp_path, variants=["full", "no_context"])
    monkeypatch.setattr(ablate, "describe_machine", lambda device: CPU)
    assert run(tmp_path, variants=["full", "no_context"], resume=True) == table


def test_runs_that_disagree_among_themselves_are_refused(
    tmp_path: Path, fake_runs: FakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(tmp_path, variants=["full", "no_context"])
    entry = json.loads((tmp_path / "no_context-init0" / "run.json").read_text())
    (tmp_path / "no_context-init0" / "run.json").write_text(json.dumps({**entry, "machine": H100}))
    with pytest.raises(TrainingError, match=r"no_context-init0 on cuda NVIDIA H100"):
        run(tmp_path, variants=["full", "no_context"], resume=True)
    del entry["machine"]  # a run that does not say where it was made
    (tmp_path / "no_context-init0" / "run.json").write_text(json.dumps(entry))
    (tmp_path / "setup.json").unlink()
    with pytest.raises(TrainingError, match="records no machine or data"):
        run(tmp_path, variants=["full", "no_context"], resume=True)


def test_cli_refuses_a_mixed_table_in_one_line(
    tmp_path: Path, small_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cli.main import main
    from model.data.dataset import load_posts

    out = tmp_path / "ablate"
    out.mkdir()
    setup = {"machine": H100, "data": dataset_identity(load_posts(small_dataset))}
    (out / "setup.json").write_text(json.dumps(setup))
    with pytest.raises(SystemExit, match=r"^uapt ablate: .*setup.json was made on cuda NVIDIA H100 80GB HBM3 and this "
                                         r"machine on cpu .*: one table never mixes machines; give another --out$"):
        main(["ablate", "--data", str(small_dataset), "--preset", "tiny", "--device", "cpu", "--only", "full",
              "--out", str(out), "--resume"])


# the table, its targets and the curves


def test_the_table_has_the_papers_rows_and_columns_and_checks_the_targets() -> None:
    runs = {v: [report(v, 0), report(v, 1)] for v in ("no_context", "no_mapping", "no_fusion", "no_query", "full")}
    text = ablate.table_text(runs)
    lines = text.splitlines()
    assert lines[0] == ("| model | BLEU-4 | METEOR | ROUGE-L | CIDEr | personalization | content_scene | content_object |")
    rows = [line.split(" | ")[0].strip("| ") for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows == ["w/o context", "w/o mapping", "w/o fusion", "w/o query", "UAPT (full)", "ground-truth captions"]
    full = next(line for line in lines if line.startswith("| UAPT (full) |"))
    assert full.count(" ± ") == 7
    assert full.endswith("| 161.00 ± 1.41 | 90.5 ± 0.7 | 0.50 ± 0.00 | 0.30 ± 0.14 |")  # CIDEr x100 and the rest, over 2 seeds
    assert "- CIDEr, UAPT (full) / w/o context: 161.00 / 101.00 = 1.59 (target ≥ 1.4): met" in lines
    assert "- personalization, UAPT (full) − w/o context: 90.5 − 60.5 = +30.0 points (target ≥ +20): met" in lines
    assert lines[-1] == ("- every ablation's CIDEr below UAPT (full)'s 161.00 (w/o context 101.00, w/o mapping 151.00, "
                         "w/o fusion 141.00, w/o query 156.00): met")


def test_the_targets_say_missed_when_they_are() -> None:
    runs = {v: [report(v, 0)] for v in ("no_context", "no_query", "full")}
    runs["no_query"][0].metrics["CIDEr"] = 1.65
    runs["no_context"][0].metrics["CIDEr"] = 1.20
    runs["no_context"][0].personalization = 0.75
    checks = ablate.target_checks(runs)
    assert checks[0].endswith("= 1.33 (target ≥ 1.4): missed")
    assert checks[1].endswith("= +15.0 points (target ≥ +20): missed")
    assert checks[2].endswith("(w/o context 120.00, w/o query 165.00, 2 of 4 ablations in the table): missed")
    assert ablate.target_checks({"full": [report("full", 0)]})[0].endswith("not computed (they need both UAPT (full) and w/o context)")


def test_a_table_of_zero_cider_misses_the_ratio_target() -> None:
    runs = {v: [report(v, 0)] for v in ("no_context", "full")}
    for reports in runs.values():
        reports[0].metrics["CIDEr"] = 0.0
    assert ablate.target_checks(runs)[0].endswith("= nan (target ≥ 1.4): missed")
    runs["full"][0].metrics["CIDEr"] = 0.1
    assert ablate.target_checks(runs)[0].endswith("= inf (target ≥ 1.4): met")


def test_mean_curve_averages_the_steps_every_seed_has() -> None:
    assert mean_curve([[[1, 3.0], [2, 2.0], [3, 1.0]], [[1, 1.0], [2, 4.0]]]) == [(1, 2.0), (2, 3.0)]
    assert mean_curve([]) == []


def test_curves_draw_each_seed_thin_and_their_mean_thick(tmp_path: Path) -> None:
    seeds = [{"val_losses": [[1, 3.0], [2, 2.0]], "probes": [[1, 0.1, 0.2], [2, 0.3, 0.4]]},
             {"val_losses": [[1, 1.0], [2, 1.0]], "probes": [[1, 0.3, 0.0], [2, 0.5, 0.2]]}]
    fig = draw_ablation_curves(tmp_path / "c.png", {"UAPT (full)": seeds, "w/o context": seeds[:1]})
    loss, probe = fig.axes
    means = {line.get_label(): list(line.get_ydata()) for line in loss.lines if line.get_linewidth() > 2}
    assert means == {"UAPT (full) (mean of 2)": [2.0, 1.5], "w/o context (mean of 1)": [3.0, 2.0]}
    assert sum(line.get_linewidth() < 1 for line in loss.lines) == 3  # one thin line per run
    probe_means = {line.get_label(): list(line.get_ydata()) for line in probe.lines if line.get_linewidth() > 2}
    assert probe_means["UAPT (full): scene (mean of 2)"] == pytest.approx([0.2, 0.4])
    assert probe_means["UAPT (full): object (mean of 2)"] == pytest.approx([0.1, 0.3])
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not draw_ablation_curves(tmp_path / "d.png", {"a": [{"val_losses": [[1, 1.0]]}]}).axes[1:]  # no probe, one panel


def test_ablate_writes_the_table_with_its_targets_and_the_curves_beside_it(tmp_path: Path, fake_runs: FakeRuns) -> None:
    table = run(tmp_path, init_seeds=(0, 1))
    assert (tmp_path / "ablation.md").read_text() == table + "\n"
    assert "Targets (reported against, never tuned toward):" in table and "= 1.59 (target ≥ 1.4): met" in table
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert not list(tmp_path.glob(".*tmp*"))  # every file was renamed into place
    only_full = tmp_path / "only-full"
    run(only_full, variants=["full"])
    assert not (only_full / "curves.png").exists()  # nothing to compare it with


# the aided row


def aid(out: Path, seed: int, weights_of: str | None = None, fitted: tuple[str, ...] = ("image_words", "scene_reader")) -> None:
    """What scripts/table3.sh does: copy a full run's checkpoint and fit the aids into the copy."""
    copy = out / f"full_aids-init{seed}"
    copy.mkdir()
    (copy / "config.json").write_text((out / f"{weights_of or f'full-init{seed}'}" / "config.json").read_text())
    for name in fitted:
        (copy / f"{name}.json").write_text("{}")


def test_the_aided_row_is_scored_with_its_aids_after_the_five(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, init_seeds=(0, 1))
    aid(tmp_path, 0)
    aid(tmp_path, 1)
    table = run(tmp_path, init_seeds=(0, 1), resume=True)
    assert fake_runs.scored[-2:] == ["full_aids-init0", "full_aids-init1"] and len(fake_runs.trained) == 10
    assert table.index("| UAPT (full) |") < table.index("| UAPT (full) + aids | 10.50 ± 0.71 |")
    assert "| 171.00 ± 1.41 | 87.5 ± 0.7 |" in table
    assert "= 1.59 (target ≥ 1.4)" in table  # the targets read the five rows only
    assert json.loads((tmp_path / "full_aids-init1" / "run.json").read_text())["machine"] == CPU
    assert [e["init_seed"] for e in json.loads((tmp_path / "ablation.json").read_text())["full_aids"]] == [0, 1]


def test_an_aided_copy_of_other_weights_is_refused(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, variants=["full", "no_context"])
    aid(tmp_path, 0, weights_of="no_context-init0")
    with pytest.raises(TrainingError, match="full_aids-init0 does not hold the weights of .*full-init0"):
        run(tmp_path, variants=["full", "no_context"], resume=True)


def test_a_row_scored_with_a_decoding_aid_is_refused(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, variants=["full"])
    (tmp_path / "full-init0" / "image_words.json").write_text("{}")  # aids fitted into the run itself
    (tmp_path / "full-init0" / "run.json").unlink()
    with pytest.raises(TrainingError, match="full-init0 was scored with a decoding aid .*must score the prefix alone"):
        run(tmp_path, variants=["full"], resume=True)
    assert not (tmp_path / "full-init0" / "run.json").exists()  # refused before it marks the run finished

    (tmp_path / "full-init0" / "image_words.json").unlink()
    aid(tmp_path, 0)
    aids_off = EvalOptions(decoding=DecodingOptions(image_word_weight=0.0, scene_constraint=False))
    with pytest.raises(TrainingError, match="full_aids-init0 was scored with no decoding aid applied"):
        run(tmp_path, variants=["full"], resume=True, options=aids_off)
    assert not (tmp_path / "full_aids-init0" / "run.json").exists()


def test_a_copy_whose_aids_are_not_both_fitted_is_no_row_yet(tmp_path: Path, fake_runs: FakeRuns) -> None:
    run(tmp_path, variants=["full"])
    aid(tmp_path, 0, fitted=("image_words",))  # the scene reader's fit was interrupted
    assert "+ aids" not in run(tmp_path, variants=["full"], resume=True)
    assert fake_runs.scored == ["full-init0"]


# processes that share one --out


def test_processes_with_distinct_variants_share_one_out_and_a_last_pass_writes_the_whole_table(
    tmp_path: Path, fake_runs: FakeRuns
) -> None:
    for variant in ablate.VARIANTS:  # as scripts/table3.sh gpu starts them, one process per variant
        run(tmp_path, variants=[variant], init_seeds=(0, 1), resume=True)
    assert list(json.loads((tmp_path / "ablation.json").read_text())) == ["no_query"]  # each process writes its own
    trained = list(fake_runs.trained)
    table = run(tmp_path, init_seeds=(0, 1), resume=True)
    assert fake_runs.trained == trained  # the last pass trains nothing
    assert all(f"| {name} |" in table for name in ("UAPT (full)", "w/o context", "w/o mapping", "w/o fusion", "w/o query"))
    assert set(json.loads((tmp_path / "ablation.json").read_text())) == set(ablate.VARIANTS)


@pytest.mark.slow
def test_two_ablate_processes_at_once_share_one_out_and_one_feature_store(tmp_path: Path, small_dataset: Path) -> None:
    """The real thing, as scripts/table3.sh gpu runs it: both processes start on an empty feature store."""
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = [sys.executable, "-m", "cli.main", "ablate", "--data", str(small_dataset), "--preset", "tiny",
              "--device", "cpu", "--precision", "float32", "--epochs", "1", "--batch-size", "20", "--num-beams", "1",
              "--limit", "2", "--cache-dir", str(cache), "--out", str(out), "--resume"]
    logs = [tmp_path / f"{variant}.log" for variant in ("full", "no_context")]
    procs = [subprocess.Popen([*common, "--only", log.stem], cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT)
             for log in logs]
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=900) == 0, log.read_text()[-3000:]
    last = subprocess.run([*common, "--only", "full", "no_context"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert last.returncode == 0, last.stderr[-3000:]
    assert "| UAPT (full) |" in last.stdout and "| w/o context |" in last.stdout
    assert "ablation run full, init seed 0: already done" in last.stderr  # the last pass trains nothing
    (store,) = cache.glob("*/store")
    shards = json.loads((store / "manifest.json").read_text())["shards"]
    post_ids = [row[0] for name in shards for row in json.loads((store / f"{name}.keys.json").read_text())]
    assert len(post_ids) == len(set(post_ids)) == 60  # every post extracted once, by one process or the other
