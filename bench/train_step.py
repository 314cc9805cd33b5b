"""Benchmark: one training step of the prefix networks, with the frozen LM in float32 and in bfloat16.

    .venv/bin/python -m bench.train_step --preset offline --batch 16 --steps 5

`uapt train --precision auto` keeps the frozen LM in float32 on an AVX2-only
CPU, where bfloat16 matmuls are several times slower,
casts it to bfloat16 on a CUDA device that supports it, and on a CPU with
AVX512-BF16 or AMX times both on its first batch and keeps the faster
(`auto=timed` below). This times the trainer's whole step (`optimizer_step`:
the loss under its autocast, backward, gradient clipping, AdamW) in both
precisions on the same batch, alternating them so that a noisy machine weighs
on both alike; where auto's pick is fixed, it says whether that pick was the
faster one on this machine. The batch is drawn by `model.data.synth`, so
captions have the training data's lengths; the prefix weights are the preset's
untrained ones (time does not depend on weight values). The last line is
machine-readable:

    float32_s=<median> bfloat16_s=<median> auto=<float32|bfloat16|timed> auto_is_faster=<true|false|timed>
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from model.data.samples import Sample
from model.data.synth import draw_content, draw_image, draw_style, write_caption
from model.device import cpu_has_fast_bfloat16, dtype_name, training_dtypes
from model.factory import load_model
from model.keywords import keywords_to_text
from model.training.features import Split
from model.training.machine import cpu_name
from model.training.train_config import TrainConfig
from model.training.trainer import make_optimizer, optimizer_step
from model.uapt import UAPT

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
KEYWORDS = ("beach", "sunset", "coffee")


def synthetic_split(model: UAPT, size: int, seed: int) -> Split:
    """`size` posts by one synthetic user, with their frozen features."""
    rng = random.Random(seed)
    style = draw_style(rng, "bench-user")
    contents = [draw_content(rng, style) for _ in range(size)]
    images = [draw_image(rng, content) for content in contents]
    context = keywords_to_text(KEYWORDS)
    samples = [
        Sample(f"bench-p{i}", style.user_id, Path(f"bench-p{i}.png"), write_caption(rng, style, c, i), KEYWORDS, context)
        for i, c in enumerate(contents)
    ]
    with torch.no_grad():
        image_features = model.encode_images(images).float().cpu()
        context_features = model.encode_context([context] * size).float().cpu()
    return Split(samples, image_features, context_features)


def precision_runs(base: UAPT, config: TrainConfig) -> dict[str, tuple[UAPT, torch.optim.Optimizer]]:
    """Per precision, a model whose frozen LM is cast to it (`base` itself for float32) and its optimizer."""
    runs = {}
    for name, dtype in PRECISIONS.items():
        model = base if dtype == torch.float32 else copy.deepcopy(base)
        model.lm.to(dtype)  # as `train` does: frozen, so only its speed changes
        model.train()
        runs[name] = (model, make_optimizer(model, config))
    return runs


def auto_pick(candidates: Sequence[torch.dtype], faster: str) -> tuple[str, str]:
    """What `--precision auto` does here, and whether it ends on the `faster` precision ('timed' when it measures)."""
    if len(candidates) > 1:
        return "timed", "timed"
    auto = dtype_name(candidates[0])
    return auto, "true" if auto == faster else "false"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="offline", choices=("tiny", "offline"), help="model preset (default: offline)")
    parser.add_argument("--batch", type=int, default=16, help="posts per step (default: 16, the demo recipe's)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per precision, after one warm-up (default: 5)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error("--steps and --batch must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    base = load_model(args.preset, device=args.device, dtype="float32")  # as `train` loads it
    split = synthetic_split(base, args.batch, seed=0)
    index = torch.arange(args.batch)
    config = TrainConfig()
    runs = precision_runs(base, config)

    def step(name: str) -> float:
        model, optimizer = runs[name]
        started = time.perf_counter()
        optimizer_step(model, optimizer, config, split, index, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    times: dict[str, list[float]] = {name: [] for name in PRECISIONS}
    for name in PRECISIONS:
        step(name)  # warm-up: first-call allocations and kernel selection
    for _ in range(args.steps):
        for name in PRECISIONS:
            times[name].append(step(name))
    medians = {name: statistics.median(values) for name, values in times.items()}
    faster = min(medians, key=medians.__getitem__)
    auto, auto_is_faster = auto_pick(training_dtypes("auto", device), faster)

    caption_tokens = int(base.tokenize_captions([s.text for s in split.samples])[1].sum())
    print(f"preset={args.preset} device={device} cpu={cpu_name()!r} native_bf16={cpu_has_fast_bfloat16()} "
          f"threads={torch.get_num_threads()} batch={args.batch} caption_tokens={caption_tokens}")
    for name, values in times.items():
        print(f"{name}: median {medians[name]:.3f} s/step, runs {[round(t, 3) for t in values]}")
    print(f"bfloat16/float32 time ratio {medians['bfloat16'] / medians['float32']:.2f}; --precision auto here: {auto}")
    print(f"float32_s={medians['float32']:.3f} bfloat16_s={medians['bfloat16']:.3f} auto={auto} "
          f"auto_is_faster={auto_is_faster}")


if __name__ == "__main__":
    main()
