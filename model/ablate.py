"""The paper's Table 3: the full model against each ablation, same seed, data and schedule.

Every variant trains on the same samples and shuffles (the trainer's
per-epoch generators), with the same schedule, from prefix weights drawn
from the same seed (load_model seeds them from the config's backbone seed),
and shares one frozen-feature cache. A removed part shifts the random
stream, so the parts the variants share do not start from identical values:
with one seed, small differences between rows can be initialisation noise.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from model.config import ABLATIONS
from model.dataset import PostRecord
from model.evaluate import EvalOptions, EvalReport, evaluate_checkpoint
from model.metrics import METRIC_NAMES
from model.train_config import TrainConfig
from model.trainer import train

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


def ablation_table(reports: dict[str, EvalReport], val_losses: dict[str, float]) -> str:
    """Markdown rows in the paper's order (ablations first, full last), metrics x100 as in the paper."""
    header = ["model", *METRIC_NAMES, "personalization", "val loss"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    order = [v for v in (*ABLATIONS, FULL) if v in reports]
    for variant in order:
        report = reports[variant]
        cells = [f"{100 * report.metrics[n]:.2f}" for n in METRIC_NAMES]
        cells += [f"{100 * report.personalization:.1f}", f"{val_losses[variant]:.4f}"]
        lines.append(f"| {ROW_NAMES[variant]} | " + " | ".join(cells) + " |")
    ceiling = next(iter(reports.values())).personalization_ceiling
    lines.append(
        f"| ground-truth captions | " + " | ".join("—" for _ in METRIC_NAMES) + f" | {100 * ceiling:.1f} | — |"
    )
    return "\n".join(lines)


def run_ablation(
    records: Sequence[PostRecord],
    *,
    preset: str,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    options: EvalOptions = EvalOptions(),
    cache_dir: str | Path = "runs/feature-cache",
    device: str = "auto",
    variants: Sequence[str] | None = None,
) -> str:
    """Train and evaluate each variant under `out_dir/<variant>`; write and return the table."""
    variants = list(variants or VARIANTS)
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; choose from {', '.join(VARIANTS)}")
    out_dir = Path(out_dir)
    reports: dict[str, EvalReport] = {}
    val_losses: dict[str, float] = {}
    timings: dict[str, dict[str, float]] = {}
    for variant in variants:
        ckpt = out_dir / variant
        ablation = None if variant == FULL else variant
        logger.info("ablation run %s -> %s", variant, ckpt)
        result = train(
            records, preset=preset, ablation=ablation, out_dir=ckpt, config=config, cache_dir=cache_dir, device=device
        )
        report = evaluate_checkpoint(records, ckpt, options=options, cache_dir=cache_dir, device=device)
        (ckpt / f"eval-{options.split}.json").write_text(
            json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        reports[variant], val_losses[variant] = report, result.final_val_loss
        timings[variant] = {"train_s": result.wall_s, "eval_s": report.wall_s}
        logger.info("%s: %s", variant, report.markdown().splitlines()[-1])
    table = ablation_table(reports, val_losses)
    (out_dir / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    summary = {v: {**reports[v].to_dict(), "final_val_loss": val_losses[v], **timings[v]} for v in reports}
    (out_dir / JSON_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return table
