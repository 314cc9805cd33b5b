"""Device and dtype choice: CUDA with half-precision inference when there is a GPU, else CPU float32;
for training, the frozen LM's dtype that runs faster here, timed by the rule serving's choice shares (`time_lms`)."""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from model.errors import ModelError

logger = logging.getLogger(__name__)

K = TypeVar("K")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CPUINFO = Path("/proc/cpuinfo")
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # native bfloat16 products


def dtype_name(dtype: torch.dtype) -> str:
    """The name DTYPES knows a dtype by, as configs, logs and metrics.json write it ("bfloat16")."""
    return str(dtype).removeprefix("torch.")


class DeviceError(ModelError):
    """A device or dtype name that is unknown or not available here."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' means the first CUDA device when there is one, else the CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise DeviceError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but no CUDA GPU is available")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None means the inference default: bfloat16 (or float16) on CUDA, float32 on the CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise DeviceError(f"dtype must be one of {', '.join(DTYPES)} or 'auto', got {dtype!r}")
    return DTYPES[dtype]


def cpuinfo_fields() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; empty where there is none (not Linux)."""
    fields: dict[str, str] = {}
    try:
        text = CPUINFO.read_text(encoding="utf-8")
    except OSError:
        return fields
    for line in text.splitlines():
        if not line.strip():
            break  # the first processor's block ends here
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without, bf16 is several times slower than fp32."""
    return not BF16_CPU_FLAGS.isdisjoint(cpuinfo_fields().get("flags", "").split())


def training_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, ...]:
    """The dtypes the frozen LM may train in: one, or, for 'auto' on a CPU with native bfloat16, both.

    On such CPUs a bfloat16 step ranges from clearly faster to clearly slower than a float32
    one (docs/RESULTS.md), so no flag decides it: the trainer times both and keeps the faster.
    """
    if precision == "auto":
        if device.type == "cuda":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32,)
        return (torch.float32, torch.bfloat16) if cpu_has_fast_bfloat16() else (torch.float32,)
    if precision not in ("float32", "bfloat16"):
        raise DeviceError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    return (DTYPES[precision],)


def choose_lm_dtype(model, precision: str, device: torch.device, one_pass: Callable[[], torch.Tensor]) -> torch.dtype:
    """The frozen LM's dtype for training: the one `training_dtypes` allows, else the faster of its two here.

    `one_pass` computes a training loss on one batch with the model as it stands; it is
    timed, with its backward, once per candidate dtype.
    """
    candidates = training_dtypes(precision, device)
    if len(candidates) == 1:
        return candidates[0]
    seconds = time_lm_dtypes(model, candidates, one_pass)
    chosen = min(seconds, key=seconds.__getitem__)
    logger.info(
        "precision auto: a forward and backward pass on one batch takes %s on this CPU; the frozen LM trains in %s",
        ", ".join(f"{seconds[d]:.2f} s in {dtype_name(d)}" for d in candidates),
        dtype_name(chosen),
    )
    return chosen


def time_lm_dtypes(
    model, dtypes: Sequence[torch.dtype], one_pass: Callable[[], torch.Tensor], repeats: int = 2
) -> dict[torch.dtype, float]:
    """Median seconds of `one_pass` and its backward with the frozen LM in each dtype (`time_lms`).

    Each dtype runs on its own cast copy of the LM (a cast down and back would round the
    frozen weights) and no optimizer step follows, so the timing changes nothing that
    training then does.
    """
    original = model.lm
    lms = {dtype: original if original.dtype == dtype else copy.deepcopy(original).to(dtype) for dtype in dtypes}
    try:
        return time_lms(model, lms, lambda: one_pass().backward(), repeats)
    finally:
        model.zero_grad(set_to_none=True)


def time_lms(model, lms: Mapping[K, nn.Module], run: Callable[[], object], repeats: int = 2) -> dict[K, float]:
    """Median seconds of `run` with each of `lms` in turn as `model.lm`; the model's own LM is put back after.

    One warm-up run each, then `repeats` rounds alternating the LMs, so that a noisy
    machine weighs on all alike. The one timing rule of both training's precision
    choice (`time_lm_dtypes`) and serving's (`model.serving_dtype`).
    """
    original = model.lm
    times: dict[K, list[float]] = {key: [] for key in lms}
    try:
        for round_ in range(repeats + 1):
            for key, lm in lms.items():
                model.lm = lm
                started = time.perf_counter()
                run()
                if round_:
                    times[key].append(time.perf_counter() - started)
    finally:
        model.lm = original
    return {key: statistics.median(values) for key, values in times.items()}
