"""The machine a run is made on, as a run records it.

Runs of the same recipe end in different places on different kinds of machine (CPUs
round differently; docs/RESULTS.md), so a table that compares runs must hold runs
of one kind only. The kind is what decides the arithmetic: on CUDA the GPU's name,
on a CPU its model (name, family and model number, as one vendor name covers
several generations) and whether it has the instructions the frozen LM's bfloat16
runs on. The core count and torch version are recorded beside it, not compared.
"""

from __future__ import annotations

import os
import platform

import torch

from model.device import cpuinfo_fields

CPU_FLAGS = ("avx2", "avx512_bf16", "amx_bf16")  # what makes float32 and bfloat16 matmuls differ in speed and rounding


def cpu_name() -> str:
    """The CPU's model name, with its family and model number where /proc/cpuinfo gives them."""
    fields = cpuinfo_fields()
    name = fields.get("model name") or platform.processor() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def cpu_flags() -> list[str]:
    """Those of `CPU_FLAGS` this CPU has."""
    present = set(cpuinfo_fields().get("flags", "").split())
    return [flag for flag in CPU_FLAGS if flag in present]


def describe_machine(device: torch.device) -> dict:
    """What a run records of the machine that trains and scores it on `device`."""
    return {
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu_name(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def machine_kind(machine: dict) -> dict:
    """The part of a machine record that two runs of one table must share."""
    if machine["device"] == "cuda":
        return {"device": "cuda", "gpu": machine["gpu"]}
    return {"device": machine["device"], "cpu": machine["cpu"], "cpu_flags": machine["cpu_flags"]}


def kind_text(machine: dict) -> str:
    """The kind in words, for messages: 'cuda NVIDIA H100 80GB HBM3' or 'cpu AMD EPYC (...) with avx2, avx512_bf16'."""
    kind = machine_kind(machine)
    if kind["device"] == "cuda":
        return f"cuda {kind['gpu']}"
    return f"{kind['device']} {kind['cpu']} with {', '.join(kind['cpu_flags']) or 'none of ' + '/'.join(CPU_FLAGS)}"
