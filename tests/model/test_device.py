"""Device and dtype choice: CUDA with half precision when present, CPU float32 otherwise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import model.device
from model.config import DecodingOptions
from model.device import DeviceError, resolve_device, resolve_dtype, time_lms, training_dtypes


def test_auto_picks_cuda_only_when_present() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_bad_device_and_dtype_names() -> None:
    with pytest.raises(DeviceError, match="device must be"):
        resolve_device("tpu:7")
    with pytest.raises(DeviceError, match="dtype must be"):
        resolve_dtype("float8", torch.device("cpu"))


def test_inference_dtype_defaults() -> None:
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if torch.cuda.is_available():
        assert resolve_dtype(None, torch.device("cuda")) in (torch.bfloat16, torch.float16)


def test_training_dtypes_are_fixed_unless_auto_meets_a_cpu_with_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert training_dtypes("float32", cpu) == (torch.float32,)
    assert training_dtypes("bfloat16", cpu) == (torch.bfloat16,)
    monkeypatch.setattr(model.device, "cpu_has_fast_bfloat16", lambda: False)
    assert training_dtypes("auto", cpu) == (torch.float32,)  # AVX2 only: bfloat16 is several times slower
    monkeypatch.setattr(model.device, "cpu_has_fast_bfloat16", lambda: True)
    assert training_dtypes("auto", cpu) == (torch.float32, torch.bfloat16)  # the trainer times both
    with pytest.raises(DeviceError, match="precision must be"):
        training_dtypes("float16", cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tiny_model_captions_on_cuda_in_half_precision() -> None:
    from model.factory import load_model
    from model_fixtures import sample_images

    model = load_model("tiny", device="cuda")
    assert next(model.lm.parameters()).dtype in (torch.bfloat16, torch.float16)
    features = model.encode_images(sample_images(2))
    context = model.encode_context(["beach", ""])
    assert features.device.type == "cuda" and features.dtype == torch.float32
    captions = model.generate(features, context, DecodingOptions(max_new_tokens=4))
    assert [len(c) for c in captions] == [3, 3]


def test_time_lms_alternates_the_lms_after_a_warm_up_and_puts_the_models_own_back() -> None:
    own, first, second = object(), object(), object()
    model = SimpleNamespace(lm=own)
    order = []
    seconds = time_lms(model, {"a": first, "b": second}, lambda: order.append(model.lm), repeats=2)
    assert order == [first, second] * 3  # the warm-up round, then two timed ones
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())
    assert model.lm is own


def test_native_bfloat16_is_read_from_the_first_processors_flags(tmp_path, monkeypatch) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(model.device, "CPUINFO", cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert model.device.cpu_has_fast_bfloat16()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert not model.device.cpu_has_fast_bfloat16()
    monkeypatch.setattr(model.device, "CPUINFO", tmp_path / "absent")
    assert not model.device.cpu_has_fast_bfloat16()
