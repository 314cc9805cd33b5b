"""Benchmark: the frozen LM's serving dtypes on the demo test split, captions/s and quality against float32 in the same run.

    .venv/bin/python -m bench.serving_dtype [--limit N] [--write-record]

The checkpoint (default: the shipped `checkpoints/demo-offline`) captions the
test split with its default decoding (beam 3, its image-word tagger and scene
constraint) once per dtype of the frozen LM: float32, the baseline; bfloat16
where this machine runs it natively (CUDA, or a CPU with AVX512-BF16 or AMX);
int8 (torch.ao dynamic quantization; CPU only). Each LM is warmed up first
with the short beam search that `--serving-dtype auto` times at load, and those
timings are printed too. The split goes batch by batch (16 posts, as `uapt
evaluate` batches them), each batch through every dtype in turn, so that a noisy
machine weighs on all alike. Each dtype's captions are scored as `uapt evaluate`
scores them: it holds quality where content_scene, content_object and
wrong_scene_rate stay within 0.02 of float32's and CIDEr within 3% of it
(`model.serving_dtype.QualityBounds`). `--write-record` stores these verdicts
beside the checkpoint's weights (serving_dtypes.json), which is what lets auto
consider a lower precision; it needs the whole split. Last, auto's own choice
is made with this run's verdicts and short timings, and the last line says what
it chose:

    auto_dtype=<dtype> speedup_auto_vs_float32=<x> quality_ok=<true|false>

where the speedup is that dtype's captions/s over float32's on the split and
quality_ok whether it held quality here. Needs Java (CIDEr, via pycocoevalcap).
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from model.checkpoint import weights_sha256
from model.data.dataset import DatasetError, load_posts
from model.data.samples import Sample
from model.device import cpu_has_fast_bfloat16, dtype_name, resolve_dtype
from model.errors import ModelError
from model.evaluation import grounding
from model.evaluation.evaluate import EvalOptions, posts_to_caption, trained_keywords_k
from model.evaluation.metrics import caption_metrics
from model.factory import load_model
from model.serving_dtype import (
    CIDER,
    GROUNDED,
    LOWER_DTYPES,
    QualityBounds,
    ServingRecord,
    choose_auto,
    compare_quality,
    convert_lm,
    time_short_decodes,
    write_record,
)
from model.training.features import FeatureCache
from model.training.machine import cpu_name, describe_machine

DEFAULT_DATA = Path("runs/data-u12-p500-s0")  # scripts/train_demo.sh's dataset
DEFAULT_CHECKPOINT = Path("checkpoints/demo-offline")


def measured_dtypes(device: torch.device, asked: Sequence[str] | None = None) -> tuple[str, ...]:
    """float32 and the lower precisions to measure on `device`: those `asked`, else those worth serving here
    (on CUDA its half precision, "auto"'s there; on the CPU bfloat16 where it is native, and int8)."""
    if asked:
        return ("float32", *(name for name in dict.fromkeys(asked) if name != "float32"))
    if device.type == "cuda":
        return ("float32", dtype_name(resolve_dtype(None, device)))
    return ("float32", "bfloat16", "int8") if cpu_has_fast_bfloat16() else ("float32", "int8")


def quality_figures(samples: Sequence[Sample], captions: Sequence[str]) -> dict[str, float | None]:
    """The grounded figures and CIDEr of one caption per post, as `uapt evaluate` computes them."""
    content = grounding.content_scores(captions, [s.labels for s in samples])
    metrics = caption_metrics({s.post_id: s.text for s in samples}, {s.post_id: c for s, c in zip(samples, captions)})
    return {**{name: content[name] for name in GROUNDED}, CIDER: metrics[CIDER]}


def _shown(figures: dict[str, float | None]) -> str:
    return " ".join(f"{name}={'n/a' if value is None else f'{value:.4f}'}" for name, value in figures.items())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serving_dtype", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"dataset folder (default: {DEFAULT_DATA})")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT, help=f"(default: {DEFAULT_CHECKPOINT})")
    parser.add_argument("--limit", type=int, default=None, help="caption only the first N test posts (a quick check)")
    parser.add_argument(
        "--write-record", action="store_true",
        help="store the quality verdicts in the checkpoint's serving_dtypes.json, for --serving-dtype auto",
    )
    parser.add_argument(
        "--dtypes", type=lambda text: text.split(","), default=None,
        help="lower precisions to measure against float32, comma-separated, from: " + ", ".join(LOWER_DTYPES) +
             " (default: those this machine runs natively). bfloat16 on a CPU without AVX512-BF16 or AMX "
             "measures its quality for the record, at the speed of emulated products",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--cache-dir", type=Path, default=Path("runs/feature-cache"), help="frozen-feature cache (default: runs/feature-cache)")
    args = parser.parse_args(argv)
    unknown = set(args.dtypes or ()) - {"float32", *LOWER_DTYPES}
    if unknown:
        parser.error(f"--dtypes: unknown {', '.join(sorted(unknown))}; choose from {', '.join(LOWER_DTYPES)}")
    if args.write_record and args.limit is not None:
        parser.error("--write-record needs the whole split: a record from part of it would vouch for what was not measured")
    try:
        records = load_posts(args.data)
        options = EvalOptions(limit=args.limit)
        model = load_model(None, checkpoint=args.checkpoint, device=args.device, serving_dtype="float32")
        posts = posts_to_caption(records, FeatureCache(args.cache_dir, model), options, trained_keywords_k(args.checkpoint))
    except (ModelError, DatasetError) as error:
        raise SystemExit(f"bench.serving_dtype: {error}") from None
    samples, images, contexts = posts.samples, posts.image_features[:], posts.context_features

    float32_lm = model.lm
    lms = {name: convert_lm(float32_lm, name) for name in measured_dtypes(model.device, args.dtypes)}
    short = time_short_decodes(model, lms)  # also each LM's warm-up
    print(f"checkpoint={args.checkpoint} posts={len(samples)} device={model.device} cpu={cpu_name()!r} "
          f"native_bf16={cpu_has_fast_bfloat16()} threads={torch.get_num_threads()} "
          f"decoding={model.applied_decoding(options.decoding).to_dict()}")
    print("auto's short decode (median): " + ", ".join(f"{name} {median:.2f} s" for name, median in short.items()))

    seconds = {name: 0.0 for name in lms}
    best: dict[str, list[str]] = {name: [] for name in lms}
    for start in range(0, len(samples), options.batch_size):  # each batch in every dtype in turn
        rows = slice(start, start + options.batch_size)
        for name, lm in lms.items():
            model.lm = lm
            started = time.perf_counter()
            nbest = model.generate(images[rows], contexts[rows], options.decoding)
            seconds[name] += time.perf_counter() - started
            best[name] += [hyps[0].text if hyps else "" for hyps in nbest]
    model.lm = float32_lm
    captions_per_s = {name: len(samples) / seconds[name] for name in lms}
    figures = {name: quality_figures(samples, captions) for name, captions in best.items()}

    bounds = QualityBounds()
    qualities = {name: compare_quality(figures[name], figures["float32"], bounds) for name in lms if name != "float32"}
    print(f"float32: captions_per_s={captions_per_s['float32']:.3f} {_shown(figures['float32'])} (baseline)")
    for name, quality in qualities.items():
        deltas = " ".join(f"d_{key}={value:+.4f}" for key, value in quality.deltas.items())
        print(f"{name}: captions_per_s={captions_per_s[name]:.3f} speedup={captions_per_s[name] / captions_per_s['float32']:.2f} "
              f"{_shown(figures[name])} {deltas} holds={str(quality.holds).lower()}")

    record = ServingRecord(
        weights_sha256=weights_sha256(args.checkpoint),
        float32=figures["float32"],
        dtypes={name: quality for name, quality in qualities.items() if name in LOWER_DTYPES},
        bounds=bounds,
        measured={
            "data": str(args.data), "split": options.split, "posts": len(samples),
            "decoding": model.applied_decoding(options.decoding).to_dict(),
            "machine": describe_machine(model.device), "date": datetime.date.today().isoformat(),
        },
    )
    if args.write_record:
        print(f"record: {write_record(args.checkpoint, record)}")
    auto, why, _ = choose_auto(model, record, timer=lambda _model, candidates: {name: short[name] for name in candidates})
    print(f"auto with these verdicts: {auto} ({why})")
    quality_ok = auto == "float32" or qualities[auto].holds
    print(f"auto_dtype={auto} speedup_auto_vs_float32={captions_per_s[auto] / captions_per_s['float32']:.2f} "
          f"quality_ok={str(quality_ok).lower()}")


if __name__ == "__main__":
    main()
