"""The frozen LM's dtype when serving: convert it, choose it for "auto", and the quality record that allows a lower one.

The LM does most of the decoding work, so it alone changes precision; the encoders
and the trained prefix networks stay float32 (the prefix enters the LM cast to its
embedding dtype, `UAPT.prefix_embeddings`). Whether a lower precision keeps a
checkpoint's captions as good is a property of that checkpoint, measured once by
``python -m bench.serving_dtype --write-record`` and stored beside its weights as
RECORD_FILE; on the CPU, "auto" considers only the dtypes that record says hold,
and of those keeps float32 unless one decodes faster on this machine, timed at the
first load and kept in the LM cache folder (TIMING_DIR), so later starts on the same
kind of machine skip the timing.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear
from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

from model import generation
from model.checkpoint import weights_sha256, write_whole
from model.config import DecodingOptions, ServingDtypeError, check_serving_dtype
from model.device import DTYPES, cpu_has_fast_bfloat16, cpuinfo_fields, dtype_name, time_lms
from model.lm import lm_cache_dir

logger = logging.getLogger(__name__)

RECORD_FILE = "serving_dtypes.json"
RECORD_FORMAT = "uapt-serving-dtypes/1"
LOWER_DTYPES = ("bfloat16", "int8")
"""The precisions below float32 that a record may vouch for (the CPU's; on CUDA "auto" needs no record)."""
GROUNDED = ("content_scene", "content_object", "wrong_scene_rate")
"""Figures compared in absolute terms (shares of posts); CIDEr is compared relative to float32's."""
CIDER = "CIDEr"

TIMING_IMAGES = 4  # "auto"'s timing decode: a small batch, the default beam, a few tokens
TIMING_TOKENS = 4
NO_EOS = -1  # no token has this id, so no timing caption ends early and every dtype does the same work
TIMING_DIR = "serving-dtype"
"""Under the LM cache folder: auto's timed choices, one JSON file per machine, thread count, weights and candidates."""

Timer = Callable[[Any, Mapping[str, nn.Module]], dict[str, float]]


@dataclass(frozen=True)
class QualityBounds:
    """How far a lower precision's figures may differ from float32's, either way, and still hold."""

    grounded: float = 0.02  # content_scene, content_object, wrong_scene_rate: absolute
    cider: float = 0.03  # CIDEr: relative


@dataclass(frozen=True)
class DtypeQuality:
    """One dtype's figures, their differences from float32's (absolute; CIDEr relative) and whether all are in bounds."""

    figures: dict[str, float | None]
    deltas: dict[str, float]
    holds: bool


@dataclass(frozen=True)
class ServingRecord:
    """What a checkpoint's RECORD_FILE says: float32's figures and each lower dtype's against them."""

    weights_sha256: str  # the prefix weights it was measured with; a retrained checkpoint's record is stale
    float32: dict[str, float | None]
    dtypes: dict[str, DtypeQuality]
    bounds: QualityBounds = QualityBounds()
    measured: dict[str, Any] = field(default_factory=dict)  # data, split, posts, decoding, CPU, date

    def holding(self) -> tuple[str, ...]:
        """The lower precisions recorded as keeping float32's quality."""
        return tuple(name for name, quality in self.dtypes.items() if quality.holds)


def compare_quality(figures: Mapping[str, float | None], float32: Mapping[str, float | None], bounds: QualityBounds) -> DtypeQuality:
    """`figures` against float32's: the grounded figures within `bounds.grounded`, CIDEr within `bounds.cider` of it.

    A grounded figure that neither run has (a dataset without labels) is left out; one
    that only one run has cannot be compared, so the dtype does not hold.
    """
    deltas: dict[str, float] = {}
    holds = True
    for name in (*GROUNDED, CIDER):
        value, base = figures.get(name), float32.get(name)
        if value is None and base is None and name != CIDER:
            continue
        if value is None or base is None:
            holds = False
            continue
        if name == CIDER:
            delta = (value - base) / base if base else (0.0 if value == base else math.inf)
            holds = holds and abs(delta) <= bounds.cider
        else:
            delta = value - base
            holds = holds and abs(delta) <= bounds.grounded
        deltas[name] = delta
    return DtypeQuality(figures=dict(figures), deltas=deltas, holds=holds)


def write_record(checkpoint: str | Path, record: ServingRecord) -> Path:
    """Store `record` as the checkpoint's RECORD_FILE; returns its path."""
    path = Path(checkpoint) / RECORD_FILE
    path.write_text(json.dumps({"format": RECORD_FORMAT, **asdict(record)}, indent=2) + "\n", encoding="utf-8")
    return path


def read_record(checkpoint: str | Path) -> ServingRecord | None:
    """The checkpoint's record; None where it has none or the record was measured with other weights (logged).

    A record that cannot be read raises ServingDtypeError: a damaged file is not taken as "nothing holds".
    """
    path = Path(checkpoint) / RECORD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("format") != RECORD_FORMAT:
            raise ValueError(f"not in format {RECORD_FORMAT}")
        record = ServingRecord(
            weights_sha256=data["weights_sha256"],
            float32=data["float32"],
            dtypes={name: DtypeQuality(**quality) for name, quality in data["dtypes"].items()},
            bounds=QualityBounds(**data["bounds"]),
            measured=data["measured"],
        )
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ServingDtypeError(f"{path} cannot be read: {error}") from error
    unknown = set(record.dtypes) - set(LOWER_DTYPES)
    if unknown:
        raise ServingDtypeError(f"{path} records dtypes other than {', '.join(LOWER_DTYPES)}: {sorted(unknown)}")
    if record.weights_sha256 != weights_sha256(checkpoint):
        logger.warning("%s was measured with other prefix weights than %s holds: ignored", path, checkpoint)
        return None
    return record


def convert_lm(lm: nn.Module, name: str, *, inplace: bool = False) -> nn.Module:
    """`lm` (float32) in serving dtype `name`: a converted copy unless `inplace` (float32: `lm` itself).

    int8 is torch.ao's dynamic quantization of every nn.Linear (SmolLM2's projections and
    head) with per-channel weight scales; activations are quantized per tensor at run time.
    """
    if name == "int8":
        with warnings.catch_warnings():  # torch.ao's eager quantization is deprecated in favour of torchao, not a dependency here
            warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
            warnings.filterwarnings("ignore", message="torch.quantize_per_tensor, torch.quantize_per_channel")
            return quantize_dynamic(lm, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=inplace)
    dtype = DTYPES[name]
    if lm.get_input_embeddings().weight.dtype == dtype:
        return lm
    return (lm if inplace else copy.deepcopy(lm)).to(dtype)


def lm_dtype_name(lm: nn.Module) -> str:
    """The serving dtype `lm` is in: "int8" once quantized, else its embeddings' dtype ("float32", "bfloat16", ...)."""
    if any(isinstance(module, DynamicQuantizedLinear) for module in lm.modules()):
        return "int8"
    return dtype_name(lm.get_input_embeddings().weight.dtype)


def time_short_decodes(model, lms: Mapping[str, nn.Module]) -> dict[str, float]:
    """Median seconds of one short beam search with each of `lms` as the model's LM (`model.device.time_lms`).

    TIMING_IMAGES images of seeded random features, the default beam and TIMING_TOKENS
    tokens: the work of serving (prefill, then cached steps) at a small fraction of its cost.
    """
    generator = torch.Generator().manual_seed(0)
    images = torch.randn((TIMING_IMAGES, model.image_encoder.num_tokens, model.image_encoder.dim), generator=generator)
    contexts = torch.randn((TIMING_IMAGES, model.context_encoder.dim), generator=generator)
    decoding = DecodingOptions(max_new_tokens=TIMING_TOKENS)

    @torch.no_grad()
    def decode() -> None:
        generation.beam_search(model.lm, model.prefix_embeddings(images, contexts), NO_EOS, decoding)

    return time_lms(model, lms, decode)


def apply_serving_dtype(
    model,
    setting: str,
    checkpoint: str | Path | None,
    timer: Timer = time_short_decodes,
    timing_dir: Path | None = None,
) -> str:
    """Put `model`'s float32 LM into the dtype `setting` asks for (`SERVING_DTYPES`); logs it in one line, returns its name.

    Raises ServingDtypeError for an unknown setting or int8 on a GPU. `timing_dir` keeps auto's
    timed choices (default: TIMING_DIR in the LM cache folder).
    """
    check_serving_dtype(setting)
    device = model.device
    if setting == "int8" and device.type != "cpu":
        raise ServingDtypeError(
            f"serving_dtype int8 is torch.ao's dynamic quantization, which runs on the CPU only, not {device.type}: "
            "use bfloat16 or auto there"
        )
    if setting == "bfloat16" and device.type == "cpu" and not cpu_has_fast_bfloat16():
        logger.warning(
            "serving_dtype bfloat16 on a CPU without AVX512-BF16 or AMX: its bfloat16 products are emulated, "
            "so decoding is likely several times slower than in float32"
        )
    converted: dict[str, nn.Module] = {}
    if setting == "auto":
        record = None if checkpoint is None or model.device.type == "cuda" else read_record(checkpoint)
        chosen, why, converted = choose_auto(model, record, timer, timing_dir or lm_cache_dir() / TIMING_DIR)
    else:
        chosen, why = setting, "as set"
    model.lm = converted[chosen] if chosen in converted else convert_lm(model.lm, chosen, inplace=True)
    logger.info("serving dtype %s: the frozen LM decodes in %s (%s)", setting, chosen, why)
    return chosen


def choose_auto(
    model, record: ServingRecord | None, timer: Timer = time_short_decodes, timing_dir: Path | None = None
) -> tuple[str, str, dict[str, nn.Module]]:
    """What "auto" serves `model`'s float32 LM in: (dtype, why, the LMs converted to time them; the model's LM unchanged).

    Half precision on CUDA. On the CPU, the fastest here (`timer`) of float32 and the lower
    precisions that `record` says hold quality and this CPU runs natively; float32 without a record.
    With `timing_dir`, a choice timed before on this kind of machine is read from it, and a new one written to it.
    """
    if model.device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bfloat16", "CUDA", {}
        return "float16", "CUDA without bfloat16", {}
    if record is None:
        return "float32", f"no quality record ({RECORD_FILE} beside the checkpoint's weights)", {}
    holding = record.holding()
    usable = [name for name in holding if name != "bfloat16" or cpu_has_fast_bfloat16()]
    if not usable:
        if holding:
            return "float32", "bfloat16 recorded as holding quality, but this CPU has no native bfloat16", {}
        return "float32", f"no lower precision recorded as holding quality in {RECORD_FILE}", {}
    candidates = ("float32", *usable)
    kept = None if timing_dir is None else timing_dir / f"{timing_key(record, candidates)}.json"
    timed = read_timing(kept, candidates)
    lms: dict[str, nn.Module] = {}
    if timed is None:
        lms = {name: convert_lm(model.lm, name) for name in candidates}
        timed = {"seconds": timer(model, lms), "date": datetime.date.today().isoformat()}
        write_timing(kept, timed)
    seconds = timed["seconds"]
    chosen = min(candidates, key=seconds.__getitem__)
    measured = ", ".join(f"{seconds[name]:.2f} s in {name}" for name in candidates)
    why = (
        f"{', '.join(usable)} recorded as holding quality; a {TIMING_IMAGES}-image, {TIMING_TOKENS}-token "
        f"beam search takes {measured} on this CPU"
    )
    if not lms:
        why += f" (timed on {timed['date']}, kept in {kept}: delete it to time again)"
    return chosen, why, lms


def timing_key(record: ServingRecord, candidates: tuple[str, ...]) -> str:
    """What a timed choice depends on: the CPU (model and flags), the torch threads and version, the weights, the candidates."""
    cpu = cpuinfo_fields()
    facts = {
        "cpu": [cpu.get(name, "") for name in ("model name", "cpu family", "model", "flags")],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "weights": record.weights_sha256,
        "candidates": candidates,
        "timing": [TIMING_IMAGES, TIMING_TOKENS],
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:32]


def read_timing(path: Path | None, candidates: tuple[str, ...]) -> dict[str, Any] | None:
    """A kept timing of every candidate; None where there is none or it cannot be read (then auto times again)."""
    if path is None or not path.is_file():
        return None
    try:
        timed = json.loads(path.read_text(encoding="utf-8"))
        if all(isinstance(timed["seconds"][name], float) for name in candidates) and isinstance(timed["date"], str):
            return timed
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        pass
    logger.warning("%s cannot be read: timing the serving dtypes again", path)
    return None


def write_timing(path: Path | None, timed: dict[str, Any]) -> None:
    """Keep a timing for later starts: written whole or not at all; a folder that cannot be written only costs the next start."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_whole(path, json.dumps(timed) + "\n")
    except OSError as error:
        logger.warning("could not keep the serving dtype timing in %s: %s", path, error)
