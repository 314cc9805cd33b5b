"""Device and dtype choice: CUDA with half-precision inference when there is a GPU, else CPU float32."""

from __future__ import annotations

from pathlib import Path

import torch

from model.errors import ModelError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def cpu_has_fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX); without, bf16 is several times slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def training_dtypes(precision: str, device: torch.device) -> tuple[torch.dtype, ...]:
    """The dtypes the frozen LM may train in: one, or, for 'auto' on a CPU with native bfloat16, both.

    On such CPUs a bfloat16 step ranges from clearly faster to clearly slower than a float32
    one (docs/RESULTS.md 1.17), so no flag decides it: the trainer times both and keeps the faster.
    """
    if precision == "auto":
        if device.type == "cuda":
            return (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32,)
        return (torch.float32, torch.bfloat16) if cpu_has_fast_bfloat16() else (torch.float32,)
    if precision not in ("float32", "bfloat16"):
        raise DeviceError(f"precision must be 'auto', 'float32' or 'bfloat16', got {precision!r}")
    return (DTYPES[precision],)
