"""The paper's Table 3: the full model against each ablation, same seeds, data and schedule.

Every variant trains on the same samples and shuffles (the trainer's
per-epoch generators), with the same schedule, and shares one frozen-feature
cache and feature store. Each part of the prefix network draws its initial weights from a
stream of its own (`model.uapt.part_seed`), so for one init seed the parts a
variant keeps start exactly as in the full model. On small data the result
still depends on that seed, so the table can repeat every variant over
several init seeds and report mean ± standard deviation.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import statistics
import threading
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from model.config import ABLATIONS, ConfigError
from model.data.dataset import PostRecord
from model.evaluation.evaluate import EvalOptions, EvalReport, evaluate_checkpoint
from model.evaluation.metrics import METRIC_NAMES
from model.training.train_config import METRICS_FILE, TrainConfig
from model.training.trainer import STATE_JSON, TrainingError, train

logger = logging.getLogger(__name__)

FULL = "full"
VARIANTS = (FULL, *ABLATIONS)
ROW_NAMES = {
    FULL: "UAPT (full)",
    "no_context": "w/o context",
    "no_mapping": "w/o mapping",
    "no_fusion": "w/o fusion",
    "no_query": "w/o query",
}
TABLE_FILE = "ablation.md"
JSON_FILE = "ablation.json"
RUN_FILE = "run.json"  # one finished run's evaluation, val loss and timings, beside its checkpoint


def ablation_table(runs: dict[str, list[tuple[EvalReport, float]]]) -> str:
    """Markdown rows in the paper's order (ablations first, full last), metrics x100 as in the paper.

    `runs` maps a variant to its (report, final val loss) per init seed.
    """
    header = ["model", *METRIC_NAMES, "personalization", "content_scene", "content_object", "val loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for variant in [v for v in (*ABLATIONS, FULL) if v in runs]:
        reports = [report for report, _ in runs[variant]]
        cells = [_cell([100 * r.metrics[name] for r in reports], 2) for name in METRIC_NAMES]
        cells.append(_cell([100 * r.personalization for r in reports], 1))
        for name in ("content_scene", "content_object"):
            values = [getattr(r, name) for r in reports]
            cells.append("—" if None in values else _cell(values, 2))
        cells.append(_cell([loss for _, loss in runs[variant]], 4))
        lines.append(f"| {ROW_NAMES[variant]} | " + " | ".join(cells) + " |")
    ceiling = next(iter(runs.values()))[0][0].personalization_ceiling
    lines.append(
        "| ground-truth captions | " + " | ".join("—" for _ in METRIC_NAMES) + f" | {100 * ceiling:.1f} | — | — | — |"
    )
    return "\n".join(lines)


def _cell(values: Sequence[float], digits: int) -> str:
    """One value, or mean ± sample standard deviation over the init seeds."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


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
    ablation returns None, without a table: `resume` continues it.
    """
    variants = list(variants or VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ConfigError(f"variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    if not init_seeds or len(set(init_seeds)) != len(init_seeds):
        raise TrainingError(f"init seeds must be distinct and at least one, got {list(init_seeds)}")
    out_dir = Path(out_dir)
    runs: dict[str, list[tuple[EvalReport, float]]] = {}
    summary: dict[str, list[dict]] = {}
    plan = [(seed, variant) for seed in init_seeds for variant in variants]
    with tqdm(plan, desc="ablation runs", unit="run") as progress:
        for seed, variant in progress:
            if stop is not None and stop.is_set():
                return None
            ckpt = out_dir / f"{variant}-init{seed}"
            finished = _finished_run(ckpt, options.split) if resume else None
            if finished is not None:
                logger.info("ablation run %s, init seed %d: already done in %s", variant, seed, ckpt)
                report, entry = finished
            else:
                done = _train_and_evaluate(
                    records, preset, variant, seed, ckpt, config, options, cache_dir, device, resume=resume, stop=stop,
                    feature_store=feature_store,
                )
                if done is None:
                    return None
                report, entry = done
            if config.precision == "auto":
                # auto may time either dtype faster from one run to the next; the rest train in this run's, to compare
                config = dataclasses.replace(config, precision=json.loads((ckpt / METRICS_FILE).read_text())["lm_dtype"])
            runs.setdefault(variant, []).append((report, entry["final_val_loss"]))
            # each run's captions stay in its own folder; the summary keeps the figures
            summary.setdefault(variant, []).append({k: v for k, v in entry.items() if k != "captions"})
            logger.info("%s (init %d): %s", variant, seed, report.markdown().splitlines()[-1])
            # written after every run, so a stopped ablation keeps what it has finished
            (out_dir / JSON_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    table = ablation_table(runs)
    (out_dir / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    return table


def _train_and_evaluate(
    records, preset, variant, seed, ckpt: Path, config, options, cache_dir, device, *, resume: bool,
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
    report = evaluate_checkpoint(records, ckpt, options=options, cache_dir=cache_dir, feature_store=feature_store,
                                 device=device)
    entry = {
        "init_seed": seed,
        **report.to_dict(),
        "final_val_loss": result.final_val_loss,
        "train_s": result.wall_s,
        "eval_s": report.wall_s,
    }
    (ckpt / RUN_FILE).write_text(json.dumps(entry, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
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
