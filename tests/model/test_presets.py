"""The presets that need real files: `paper` fails clearly here, `offline` loads SmolLM2 from its GGUF."""

from __future__ import annotations

import time

import pytest
import torch

from model.factory import ModelUnavailable, load_model


def test_paper_preset_fails_fast_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelUnavailable, match="preset 'paper' cannot be loaded here.*EVA02-L-14") as error:
        load_model("paper", device="cpu")
    assert "\n" not in str(error.value)
    assert time.monotonic() - start < 60


def test_random_weights_keep_the_paper_architecture_and_say_so() -> None:
    from model.config import RANDOM_WEIGHTS_NOTE, ConfigError, get_config, with_random_weights

    paper = get_config("paper")
    timing = with_random_weights(paper)
    assert timing.image_encoder == paper.image_encoder == "EVA02-L-14" and timing.image_pretrained is None
    assert timing.lm == "random-gpt2" and timing.lm_config == {"n_layer": 24, "n_head": 16, "n_embd": 1024, "n_positions": 1024}
    assert timing.d_model == paper.d_model and timing.notes[-1] == RANDOM_WEIGHTS_NOTE
    with pytest.raises(ConfigError, match="GPT-2 LMs only"):
        with_random_weights(get_config("offline"))


def test_unknown_lm_hub_id_fails_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    from model.lm import load_lm
    from model.assets import AssetMissing

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AssetMissing, match="not in the Hugging Face cache"):
        load_lm("someone/not-a-cached-model")


@pytest.mark.slow
def test_smollm2_from_gguf_takes_a_prefix() -> None:
    """The shipped SmolLM2-135M GGUF loads and runs a prefix forward pass and a short beam search."""
    from model.assets import smollm2_gguf
    from model.config import DecodingOptions
    from model.generation import beam_search
    from model.lm import load_lm

    lm, tokenizer = load_lm(str(smollm2_gguf()))
    assert lm.config.hidden_size == 576 and tokenizer.eos_token_id is not None
    lm.requires_grad_(False).eval()
    prefix = torch.randn(2, 20, 576) * 0.5
    ids = torch.tensor([tokenizer("a dog on the beach", add_special_tokens=False).input_ids] * 2)
    embeds = torch.cat([prefix, lm.get_input_embeddings()(ids)], dim=1)
    with torch.no_grad():
        logits = lm(inputs_embeds=embeds).logits
    assert logits.shape == (2, 20 + ids.size(1), lm.config.vocab_size)
    assert torch.isfinite(logits).all()
    nbest = beam_search(lm, prefix, tokenizer.eos_token_id, DecodingOptions(max_new_tokens=3))
    assert [len(image) for image in nbest] == [3, 3]


@pytest.mark.slow
def test_offline_preset_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    """EfficientNet-Lite0 (ImageNet, frozen) + MiniLM + SmolLM2 GGUF: sizes as configured, captions come out."""
    from model.captioner import Captioner
    from model.config import DecodingOptions
    from model_fixtures import sample_images

    with caplog.at_level("WARNING"):
        model = load_model("offline", device="cpu")
    assert "random frozen weights" not in caplog.text  # every backbone of the offline preset is pretrained
    assert model.image_encoder.dim == 1280 and model.image_encoder.num_tokens == 49  # the 7x7 grid
    assert model.context_encoder.dim == 384
    assert model.lm.config.hidden_size == 576
    trainable_bytes = 4 * sum(p.numel() for p in model.trainable_parameters())
    assert trainable_bytes < 48 * 2**20  # d_model 256 keeps the checkpoint small (about 40 MiB)
    similar = model.encode_context(["beach sunset sea", "sunset at the beach", "tax forms and invoices"])
    similar = torch.nn.functional.normalize(similar, dim=-1)
    assert similar[0] @ similar[1] > similar[0] @ similar[2]  # MiniLM gives real semantics
    captions = Captioner(model, DecodingOptions(max_new_tokens=4)).caption(sample_images(2), [["beach"], []], num_captions=2)
    assert [len(c) for c in captions] == [2, 2]
    assert all(isinstance(c.text, str) and c.token_ids for image in captions for c in image)


@pytest.mark.slow
def test_gguf_lm_is_cached_after_the_first_load(tmp_path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    """Later loads read the de-quantized safetensors cache (same weights, same tokenizer); a damaged cache is rebuilt."""
    import model.lm as lm_module
    from model.assets import file_sha256, smollm2_gguf

    monkeypatch.setenv(lm_module.LM_CACHE_ENV, str(tmp_path))
    first, first_tokenizer = lm_module.load_lm("asset:smollm2")
    cached = tmp_path / file_sha256(smollm2_gguf())
    assert (cached / lm_module.CACHE_COMPLETE).is_file()

    sources: list[str] = []
    real = lm_module._from_pretrained
    monkeypatch.setattr(lm_module, "_from_pretrained", lambda source, **kw: sources.append(source) or real(source, **kw))
    second, second_tokenizer = lm_module.load_lm("asset:smollm2")
    assert sources == [str(cached)]  # the GGUF was not read again
    assert getattr(second, "hf_quantizer", None) is None  # an ordinary float32 checkpoint
    want, got = first.state_dict(), second.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    text = "a kitty at the seaside #love ✨"
    assert first_tokenizer(text).input_ids == second_tokenizer(text).input_ids
    assert first_tokenizer.eos_token_id == second_tokenizer.eos_token_id

    for weights in cached.glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    sources.clear()
    with caplog.at_level("WARNING"):
        lm_module.load_lm("asset:smollm2")
    assert "cannot be read" in caplog.text
    assert sources == [str(cached), str(smollm2_gguf().parent)]  # fell back to the GGUF, then rewrote the cache
    assert (cached / lm_module.CACHE_COMPLETE).is_file()
    assert not list(tmp_path.glob("*.tmp-*"))
