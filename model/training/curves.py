"""Learning-curve figures: one run's (curve.png, beside its checkpoint) and an ablation's (curves.png, beside its table).

Both read what the trainer records (metrics.json): the train loss per step, and at each
val check ``[step, val loss]`` and ``[step, scene named, object named]`` of the greedy
grounding probe. Figures are drawn without pyplot: no GUI backend, no global figure state.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

Curve = Sequence[Sequence[float]]  # [step, value] pairs, as metrics.json holds them


def draw_run_curve(
    path: Path,
    train_losses: Sequence[float],
    val_losses: Curve,
    probes: Sequence[Sequence[float]],
    *,
    title: str,
    weighted: bool = False,
) -> None:
    """One run: train loss per step and val loss per check; the probe's scene and object on a second axis."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.plot(range(1, len(train_losses) + 1), train_losses, alpha=0.7,
            label=f"train (per step{', image words weighted' if weighted else ''})")
    if val_losses:
        xs, ys = zip(*val_losses)
        ax.plot(xs, ys, "o-", label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("caption NLL")
    if probes:
        right = ax.twinx()
        steps, scene, obj = zip(*probes)
        right.plot(steps, scene, "s--", color="tab:green", label="val scene named (greedy)")
        right.plot(steps, obj, "^--", color="tab:red", label="val object named (greedy)")
        right.set_ylim(0, 1)
        right.set_ylabel("share of gradable val posts")
        right.legend(loc="center right")
    ax.set_title(f"UAPT training {title}")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def mean_curve(curves: Sequence[Curve]) -> list[tuple[int, float]]:
    """The mean over runs at each step they all have (runs of one schedule check at the same steps)."""
    if not curves:
        return []
    shared = set.intersection(*({int(point[0]) for point in curve} for curve in curves))
    values: dict[int, list[float]] = {step: [] for step in shared}
    for curve in curves:
        for step, value in ((int(p[0]), p[1]) for p in curve):
            if step in values:
                values[step].append(value)
    return [(step, statistics.mean(values[step])) for step in sorted(values)]


def draw_ablation_curves(path: Path, runs: Mapping[str, Sequence[dict]]) -> Figure:
    """Val loss (left) and, where recorded, the probe's scene and object named (right) per step, one colour per row.

    `runs` maps a row's name to its runs' metrics.json contents, one per init seed: each
    seed is drawn thin, their mean thick. Returns the figure, which is also saved at `path`.
    """
    with_probes = any(m.get("probes") for metrics in runs.values() for m in metrics)
    fig = Figure(figsize=(12 if with_probes else 7, 4))
    axes = fig.subplots(1, 2 if with_probes else 1, squeeze=False)[0]
    colours = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
    for colour, (name, metrics) in zip(colours, runs.items()):
        _seeds_and_mean(axes[0], [m["val_losses"] for m in metrics], colour, name, "-")
        if with_probes:
            probes = [m.get("probes") or [] for m in metrics]
            _seeds_and_mean(axes[1], [[(p[0], p[1]) for p in run] for run in probes], colour, f"{name}: scene", "-")
            _seeds_and_mean(axes[1], [[(p[0], p[2]) for p in run] for run in probes], colour, f"{name}: object", "--")
    axes[0].set(xlabel="step", ylabel="val caption NLL", title="val loss (thin: each init seed; thick: mean)")
    axes[0].legend()
    if with_probes:
        axes[1].set(xlabel="step", ylabel="share of gradable val posts", ylim=(0, 1),
                    title="grounding probe: scene / object named (greedy)")
        axes[1].legend()
    fig.tight_layout()
    _save(fig, path)
    return fig


def _seeds_and_mean(ax: Axes, curves: Sequence[Curve], colour: str, label: str, style: str) -> None:
    curves = [curve for curve in curves if curve]
    for curve in curves:
        xs, ys = zip(*curve)
        ax.plot(xs, ys, style, color=colour, linewidth=0.7, alpha=0.35)
    mean = mean_curve(curves)
    if mean:
        xs, ys = zip(*mean)
        ax.plot(xs, ys, style, color=colour, linewidth=2.2, label=f"{label} (mean of {len(curves)})")


def _save(fig: Figure, path: Path) -> None:
    """Write through a temporary file, so that a reader (or a second writer) never meets half a PNG."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
