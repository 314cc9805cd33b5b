"""The paper's Table 3: the full model against each ablation, same seeds, data and schedule.

Every variant trains on the same samples and shuffles (the trainer's
per-epoch generators), with the same schedule, and shares one frozen-feature
cache and feature store. Each part of the prefix network draws its initial weights from a
stream of its own (`model.uapt.part_seed`), so for one init seed the parts a
variant keeps start exactly as in the full model. On small data the result
still depends on that seed, so the table can repeat every variant over
several init seeds and report mean ± standard deviation.

One table holds runs of one kind of machine and one dataset (`model.training.machine`,
`model.data.dataset.dataset_identity`): each run records both in its run.json, the first
call that trains or scores a run writes them to setup.json, and every later call refuses a
run, or a machine, that differs. Processes given distinct variants may share one
`out_dir` at once: each writes its own runs, every file is replaced whole, and a last
call over all variants with `resume` writes the whole table.

The five rows score the prefix networks alone: a run trained here holds no decoding aid,
and a row whose recorded decoding used one is refused. One more row, `AIDED`, is the
full model with its aids: where ``full_aids-init<seed>`` holds a copy of that seed's full
checkpoint with both an image-word tagger and a scene reader fitted into it
(scripts/table3.sh), it is scored with the same options, the aids then applying.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
import threading
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from model.checkpoint import CONFIG_FILE, write_whole
from model.config import ABLATIONS, ConfigError
from model.data.dataset import PostRecord, dataset_identity
from model.device import resolve_device
from model.evaluation.evaluate import EvalOptions, EvalReport, evaluate_checkpoint
from model.guidance.scene_reader import NAME as SCENE_READER
from model.guidance.storage import readout_files
from model.guidance.tagger import NAME as TAGGER
from model.training.curves import draw_ablation_curves
from model.training.machine import describe_machine, kind_text, machine_kind
from model.training.train_config import METRICS_FILE, TrainConfig
from model.training.trainer import STATE_JSON, TrainingError, train

logger = logging.getLogger(__name__)

FULL = "full"
VARIANTS = (FULL, *ABLATIONS)
AIDED = "full_aids"  # not trained here: a copy of a full run's checkpoint with the decoding aids fitted into it
AIDS = (TAGGER, SCENE_READER)  # the aided row's, both fitted: a read-out's description file is written last
ROW_NAMES = {
    FULL: "UAPT (full)",
    "no_context": "w/o context",
    "no_mapping": "w/o mapping",
    "no_fusion": "w/o fusion",
    "no_query": "w/o query",
    AIDED: "UAPT (full) + aids",
}
ROW_ORDER = (*ABLATIONS, FULL, AIDED)  # the paper's: ablations first, the full model last; then ours
PAPER_COLUMNS = ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
CIDER_RATIO_TARGET = 1.4  # full's mean CIDEr against w/o context's (docs/RESULTS.md, Table 3)
PERSONALIZATION_GAP_TARGET = 20.0  # points of personalization (x100) full holds above w/o context
TABLE_FILE = "ablation.md"
JSON_FILE = "ablation.json"
CURVES_FILE = "curves.png"  # full against w/o context: val loss and grounding probe per step
SETUP_FILE = "setup.json"  # the machine and data every run of the table was made on
RUN_FILE = "run.json"  # one finished run's evaluation, val loss, timings, machine and data, beside its checkpoint

Runs = dict[str, list[EvalReport]]  # a row's reports, one per init seed


def run_name(variant: str, seed: int) -> str:
    """A run's folder in the table's out_dir."""
    return f"{variant}-init{seed}"


def ablation_table(runs: Runs) -> str:
    """Markdown rows in the paper's order (ablations first, full last; then full with aids), metrics x100 as in the paper."""
    header = ["model", *PAPER_COLUMNS, "personalization", "content_scene", "content_object"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in [v for v in ROW_ORDER if v in runs]:
        reports = runs[variant]
        cells = [_cell([100 * r.metrics[name] for r in reports], 2) for name in PAPER_COLUMNS]
        cells.append(_cell([100 * r.personalization for r in reports], 1))
        for name in ("content_scene", "content_object"):
            values = [getattr(r, name) for r in reports]
            cells.append("—" if None in values else _cell(values, 2))
        lines.append(f"| {ROW_NAMES[variant]} | " + " | ".join(cells) + " |")
    ceiling = next(iter(runs.values()))[0].personalization_ceiling
    lines.append("| ground-truth captions | " + " | ".join("—" for _ in PAPER_COLUMNS) + f" | {100 * ceiling:.1f} | — | — |")
    return "\n".join(lines)


def _cell(values: Sequence[float], digits: int) -> str:
    """One value, or mean ± sample standard deviation over the init seeds."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def target_checks(runs: Runs) -> list[str]:
    """The table's three targets as computed lines, on the means over seeds (the aided row takes no part)."""
    cider = {v: statistics.mean(100 * r.metrics["CIDEr"] for r in reports) for v, reports in runs.items()}
    personalization = {v: statistics.mean(100 * r.personalization for r in reports) for v, reports in runs.items()}
    lines = []
    if FULL in runs and "no_context" in runs:
        full, bare = cider[FULL], cider["no_context"]
        ratio = full / bare if bare else (math.inf if full > 0 else math.nan)  # 0 / 0 is no gain
        lines.append(f"- CIDEr, UAPT (full) / w/o context: {full:.2f} / {bare:.2f} = {ratio:.2f} "
                     f"(target ≥ {CIDER_RATIO_TARGET:g}): {_verdict(ratio >= CIDER_RATIO_TARGET)}")
        gap = personalization[FULL] - personalization["no_context"]
        lines.append(f"- personalization, UAPT (full) − w/o context: {personalization[FULL]:.1f} − "
                     f"{personalization['no_context']:.1f} = {gap:+.1f} points "
                     f"(target ≥ +{PERSONALIZATION_GAP_TARGET:g}): {_verdict(gap >= PERSONALIZATION_GAP_TARGET)}")
    else:
        lines.append("- CIDEr ratio and personalization gap: not computed (they need both UAPT (full) and w/o context)")
    ablations = [v for v in ABLATIONS if v in runs]
    if FULL in runs and ablations:
        listed = ", ".join(f"{ROW_NAMES[v]} {cider[v]:.2f}" for v in ablations)
        partial = "" if len(ablations) == len(ABLATIONS) else f", {len(ablations)} of {len(ABLATIONS)} ablations in the table"
        lines.append(f"- every ablation's CIDEr below UAPT (full)'s {cider[FULL]:.2f} ({listed}{partial}): "
                     f"{_verdict(all(cider[v] < cider[FULL] for v in ablations))}")
    else:
        lines.append("- ablations below UAPT (full) in CIDEr: not computed (it needs UAPT (full) and an ablation)")
    return lines


def _verdict(met: bool) -> str:
    return "met" if met else "missed"


def table_text(runs: Runs) -> str:
    """The table and its target checks, as ablation.md holds them and `uapt ablate` prints them."""
    return ablation_table(runs) + "\n\nTargets (reported against, never tuned toward):\n" + "\n".join(target_checks(runs))


def run_ablation(
    records: Sequence[PostRecord],
    *,
    preset: str,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    options: EvalOptions = EvalOptions(),
    cache_dir: str | Path = "runs/feature-cache",
    feature_store: str | Path | None = None,
    device: str = "auto",
    variants: Sequence[str] | None = None,
    init_seeds: Sequence[int] = (0,),
    resume: bool = False,
    stop: threading.Event | None = None,
) -> str | None:
    """Train and evaluate each variant per init seed under `out_dir/<variant>-init<seed>`; write and return the table.

    With `resume`, runs already trained and evaluated (their run.json) are read back instead
    of redone, and a run stopped mid-training continues from its last checkpoint. When `stop`
    is set (see `model.training.stop`), the run in progress saves its exact state and the
    ablation returns None, without a table: `resume` continues it. Before any work, the
    runs' machines and data are checked against each other (`check_one_setup`).
    """
    variants = list(variants or VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not init_seeds or len(set(init_seeds)) != len(init_seeds):
        raise TrainingError(f"init seeds must be distinct and at least one, got {list(init_seeds)}")
    out_dir = Path(out_dir)
    plan = [(seed, variant) for seed in init_seeds for variant in variants]
    if FULL in variants:
        plan += [(seed, AIDED) for seed in init_seeds if _holds_aids(out_dir / run_name(AIDED, seed))]
    finished = {run: _finished_run(out_dir / run_name(run[1], run[0]), options.split) if resume else None for run in plan}
    setup = check_one_setup(
        out_dir, records, device,
        {out_dir / run_name(variant, seed): done[1] for (seed, variant), done in finished.items() if done is not None},
        needs_work=any(done is None for done in finished.values()),
    )
    runs: Runs = {}
    summary: dict[str, list[dict]] = {}
    with tqdm(plan, desc="ablation runs", unit="run") as progress:
        for seed, variant in progress:
            if stop is not None and stop.is_set():
                return None
            ckpt = out_dir / run_name(variant, seed)
            if variant == AIDED:
                _check_aided_copy(ckpt, out_dir / run_name(FULL, seed))
            done = finished[(seed, variant)]
            if done is not None:
                logger.info("ablation run %s, init seed %d: already done in %s", variant, seed, ckpt)
                _check_decoding(ckpt, variant, done[1].get("decoding", {}))
            elif variant == AIDED:
                done = _evaluate(records, ckpt, variant, seed, None, options, cache_dir, feature_store, device, setup)
            else:
                done = _train_and_evaluate(
                    records, preset, variant, seed, ckpt, config, options, cache_dir, device, setup, resume=resume,
                    stop=stop, feature_store=feature_store,
                )
                if done is None:
                    return None
            report, entry = done
            if variant != AIDED and config.precision == "auto":
                # auto may time either dtype faster from one run to the next; the rest train in this run's, to compare
                config = dataclasses.replace(config, precision=json.loads((ckpt / METRICS_FILE).read_text())["lm_dtype"])
            runs.setdefault(variant, []).append(report)
            # each run's captions stay in its own folder; the summary keeps the figures
            summary.setdefault(variant, []).append({k: v for k, v in entry.items() if k != "captions"})
            logger.info("%s (init %d): %s", variant, seed, report.markdown().splitlines()[-1])
            # written after every run, so a stopped ablation keeps what it has finished
            write_whole(out_dir / JSON_FILE, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    table = table_text(runs)
    write_whole(out_dir / TABLE_FILE, table + "\n")
    if FULL in runs and "no_context" in runs:
        _draw_curves(out_dir, init_seeds)
    return table


def check_one_setup(
    out_dir: Path, records: Sequence[PostRecord], device: str, finished: dict[Path, dict], *, needs_work: bool
) -> dict:
    """The machine and data this call's runs record; refuses a table that would mix machines or data.

    Compared: the table's setup.json, the finished runs' records (`finished`: run folder ->
    run.json entry) and, where this call trains or scores a run (`needs_work`), this machine.
    Machines compare by `machine_kind`, data by `dataset_identity`, which must be `records`'
    in every case. The first call with work writes setup.json.
    """
    current = {"machine": describe_machine(resolve_device(device)), "data": dataset_identity(records)}
    path = out_dir / SETUP_FILE
    sources: list[tuple[str, dict]] = [(str(path), json.loads(path.read_text(encoding="utf-8")))] if path.is_file() else []
    for run_dir, entry in finished.items():
        if "machine" not in entry or "data" not in entry:
            raise TrainingError(f"{run_dir}: its {RUN_FILE} records no machine or data, so it cannot join a table "
                                f"whose runs must share both: give another --out")
        sources.append((str(run_dir), {"machine": entry["machine"], "data": entry["data"]}))
    if needs_work:
        sources.append(("this machine", current))
    for name, setup in sources:
        if setup["data"] != current["data"]:
            raise TrainingError(f"{name} was made on data of {_data_text(setup['data'])}, but this ablation's data has "
                                f"{_data_text(current['data'])}: one table never mixes data; give another --out")
        first_name, first = sources[0]  # every run was made where the first source says, or none of them
        if machine_kind(setup["machine"]) != machine_kind(first["machine"]):
            raise TrainingError(f"{first_name} was made on {kind_text(first['machine'])} and {name} on "
                                f"{kind_text(setup['machine'])}: one table never mixes machines; give another --out")
    if needs_work and not path.is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_whole(path, json.dumps(current, indent=2, ensure_ascii=False) + "\n")
    return current


def _data_text(data: dict) -> str:
    splits = "/".join(str(data["splits"].get(name, 0)) for name in ("train", "val", "test"))
    return f"{data['users']} users, {data['posts']} posts ({splits} train/val/test), fingerprint {data['fingerprint']}"


def _check_decoding(ckpt: Path, variant: str, decoding: dict) -> None:
    """The five rows score the prefix alone; the aided row its aids. The decoding as applied (run.json) tells which."""
    aided = bool(decoding.get("image_word_weight")) or bool(decoding.get("scene_constraint"))
    if variant == AIDED and not aided:
        raise TrainingError(f"{ckpt} was scored with no decoding aid applied (image_word_weight "
                            f"{decoding.get('image_word_weight')}, scene_constraint {decoding.get('scene_constraint')}): "
                            "fit them into it (uapt fit-image-words, uapt fit-scene-reader) and score it with their defaults")
    if variant != AIDED and aided:
        raise TrainingError(f"{ckpt} was scored with a decoding aid (image_word_weight {decoding.get('image_word_weight')}, "
                            f"scene_constraint {decoding.get('scene_constraint')}): its row must score the prefix alone; "
                            f"fit aids into a copy ({AIDED}-init<seed>), remove them here, delete its {RUN_FILE} and resume")


def _holds_aids(folder: Path) -> bool:
    """Whether both aids are fitted in `folder`: a copy whose fitting is not done yet is no row."""
    return all((folder / readout_files(name)[1]).is_file() for name in AIDS)


def _check_aided_copy(aided: Path, full: Path) -> None:
    """The aided row must hold its full run's very weights (config.json records their checksum)."""
    sums = [json.loads((d / CONFIG_FILE).read_text(encoding="utf-8")).get("sha256") if (d / CONFIG_FILE).is_file() else None
            for d in (aided, full)]
    if sums[0] is None or sums[0] != sums[1]:
        raise TrainingError(f"{aided} does not hold the weights of {full}: copy them again and refit the aids")


def _train_and_evaluate(
    records, preset, variant, seed, ckpt: Path, config, options, cache_dir, device, setup: dict, *, resume: bool,
    feature_store: str | Path | None,
    stop: threading.Event | None,
) -> tuple[EvalReport, dict] | None:
    """One run: train (resuming a stopped one when asked), evaluate, write its entry beside the checkpoint.

    None when `stop` ended the training early: there is nothing to evaluate yet.
    """
    partial = resume and (ckpt / STATE_JSON).is_file()
    logger.info("ablation run %s, init seed %d -> %s%s", variant, seed, ckpt, " (resumed)" if partial else "")
    result = train(
        records,
        preset=preset,
        ablation=None if variant == FULL else variant,
        out_dir=ckpt,
        config=config,
        cache_dir=cache_dir,
        feature_store=feature_store,
        device=device,
        init_seed=seed,
        resume=ckpt if partial else None,
        stop=stop,
    )
    if result.stopped_early:
        return None
    return _evaluate(records, ckpt, variant, seed, result, options, cache_dir, feature_store, device, setup)


def _evaluate(
    records, ckpt: Path, variant: str, seed: int, result, options, cache_dir, feature_store, device, setup: dict
) -> tuple[EvalReport, dict]:
    """Score a run's checkpoint and write its entry (run.json); `result` is its training's, None for the aided row.

    A row scored with the wrong aids is refused before its run.json marks it finished.
    """
    report = evaluate_checkpoint(records, ckpt, options=options, cache_dir=cache_dir, feature_store=feature_store,
                                 device=device)
    _check_decoding(ckpt, variant, report.decoding)
    entry = {
        "init_seed": seed,
        **report.to_dict(),
        "final_val_loss": None if result is None else result.final_val_loss,
        "train_s": None if result is None else result.wall_s,
        "eval_s": report.wall_s,
        **setup,
    }
    write_whole(ckpt / RUN_FILE, json.dumps(entry, indent=2, ensure_ascii=False) + "\n")
    return report, entry


def _finished_run(ckpt: Path, split: str) -> tuple[EvalReport, dict] | None:
    """A run's report and entry when it has been trained and evaluated on `split`, else None."""
    path = ckpt / RUN_FILE
    if not path.is_file():
        return None
    entry = json.loads(path.read_text(encoding="utf-8"))
    if entry.get("split") != split:
        return None
    fields = {f.name for f in dataclasses.fields(EvalReport)}
    return EvalReport(**{k: v for k, v in entry.items() if k in fields}), entry


def _draw_curves(out_dir: Path, seeds: Sequence[int]) -> None:
    """curves.png: full against w/o context over `seeds`, from each run's metrics.json (a run copied without one is left out)."""
    rows = {}
    for variant in (FULL, "no_context"):
        paths = [out_dir / run_name(variant, seed) / METRICS_FILE for seed in seeds]
        rows[ROW_NAMES[variant]] = [json.loads(p.read_text(encoding="utf-8")) for p in paths if p.is_file()]
    if all(rows.values()):
        draw_ablation_curves(out_dir / CURVES_FILE, rows)
