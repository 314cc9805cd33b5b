"""The UAPT network on the tiny preset: shapes and dtypes per ablation, the loss, and freezing."""

from __future__ import annotations

import pytest
import torch

from model.config import ABLATIONS, PRESETS, UAPTConfig, get_config

from model.factory import load_model

from model.keywords import keywords_to_text
from model.config import ConfigError
from model.uapt import InputError
from model_fixtures import SAMPLE_KEYWORDS, sample_images, tiny_model

CAPTIONS = ["a dog on the beach", "sunset over the sea with friends", "coffee", "my cat sleeping"]


@pytest.mark.parametrize("ablation", [None, *ABLATIONS])
def test_shapes_and_dtypes_through_every_stage(ablation: str | None) -> None:
    model = tiny_model(ablation)
    config = model.config
    images = model.encode_images(sample_images(4))
    context = model.encode_context([keywords_to_text(k) for k in SAMPLE_KEYWORDS[:4]])
    assert images.shape == (4, 1, model.image_encoder.dim) and images.dtype == torch.float32  # pooled: one token
    assert context.shape == (4, model.context_encoder.dim) and context.dtype == torch.float32

    input_ids, mask = model.tokenize_captions(CAPTIONS)
    assert input_ids.dtype == torch.long and input_ids.shape == mask.shape
    hidden = model.lm.get_input_embeddings().embedding_dim
    prefix = model.prefix_embeddings(images, context)
    expected_prefix = 16 if ablation == "no_context" else 20
    assert config.prefix_length == expected_prefix
    assert prefix.shape == (4, expected_prefix, hidden) and prefix.dtype == torch.float32

    out = model(images, context, input_ids, mask)
    assert out.logits.shape == (*input_ids.shape, model.lm.config.vocab_size)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)


def test_ablations_change_the_trainable_parts() -> None:
    full = tiny_model()
    names = {a: {n for n, _ in tiny_model(a).prefix.named_parameters()} for a in ABLATIONS}
    full_names = {n for n, _ in full.prefix.named_parameters()}
    assert "mapping.queries" in full_names
    assert not any(n.startswith("user_projection") for n in names["no_context"])
    assert not any(n.startswith("mapping") for n in names["no_mapping"])
    assert not any(n.startswith("fusion") for n in names["no_fusion"])
    assert "mapping.queries" not in names["no_query"]
    queries = tiny_model("no_query").prefix.mapping.queries
    assert not queries.requires_grad and torch.count_nonzero(queries) == 0


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_ablations_start_the_parts_they_keep_from_the_full_models_weights(ablation: str) -> None:
    full = dict(tiny_model().prefix.named_parameters())
    ablated = dict(tiny_model(ablation).prefix.named_parameters())
    shared = [name for name in ablated if name in full and ablated[name].shape == full[name].shape]
    assert "to_lm.weight" in shared and "visual_projection.linear.weight" in shared
    for name in shared:
        assert torch.equal(ablated[name], full[name]), f"{ablation}: {name} starts from other values"


def test_no_context_ignores_context_and_full_model_uses_it() -> None:
    images = tiny_model().encode_images(sample_images(2))
    context = tiny_model().encode_context(["beach sunset", "coffee"])
    other = tiny_model().encode_context(["night city", "dog park"])
    full, blind = tiny_model(), tiny_model("no_context")
    assert not torch.allclose(full.prefix_embeddings(images, context), full.prefix_embeddings(images, other))
    assert torch.equal(blind.prefix_embeddings(images, context), blind.prefix_embeddings(images, None))


def test_tokenize_appends_eos_and_masks_padding() -> None:
    model = tiny_model()
    input_ids, mask = model.tokenize_captions(["a dog", "a dog on the beach"])
    lengths = mask.sum(1).tolist()
    assert lengths[0] < lengths[1]
    for row, length in enumerate(lengths):
        assert input_ids[row, length - 1].item() == model.eos_id
        assert mask[row, :length].all() and not mask[row, length:].any()
    long_ids, _ = model.tokenize_captions(["word " * 500])
    assert long_ids.shape[1] == model.config.max_caption_tokens


def test_loss_counts_caption_tokens_only() -> None:
    """Padding content never reaches the loss; changing a real token does."""
    model = tiny_model()
    images = model.encode_images(sample_images(2))
    context = model.encode_context(["a", "b"])
    input_ids, mask = model.tokenize_captions(["a dog", "a dog on the beach at sunset"])
    base = model(images, context, input_ids, mask).loss
    scribbled = input_ids.clone()
    scribbled[mask == 0] = 1234
    assert torch.allclose(model(images, context, scribbled, mask).loss, base)
    changed = input_ids.clone()
    changed[0, 0] = 1234
    assert not torch.allclose(model(images, context, changed, mask).loss, base)


def test_logits_are_the_whole_sequences_at_the_positions_that_predict_caption_tokens() -> None:
    """The forward pass keeps only the LM head's last T+1 positions; that must be the same as slicing them all."""
    model = tiny_model()
    images = model.encode_images(sample_images(2))
    context = model.encode_context(["a", "b"])
    input_ids, mask = model.tokenize_captions(["a dog", "a dog on the beach at sunset"])
    with torch.no_grad():
        prefix = model.prefix_embeddings(images, context)
        full_mask = torch.cat([mask.new_ones(prefix.shape[:2]), mask], dim=1)
        full = model.lm(
            inputs_embeds=torch.cat([prefix, model.lm.get_input_embeddings()(input_ids)], dim=1),
            attention_mask=full_mask,
            position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0),
        ).logits
        logits = model(images, context, input_ids, mask).logits
    assert logits.shape == (*input_ids.shape, full.size(-1))
    assert torch.allclose(logits, full[:, prefix.size(1) - 1 : -1], atol=1e-5)


def test_input_errors_name_the_argument() -> None:
    model = tiny_model()
    images = model.encode_images(sample_images(2))
    ids, mask = model.tokenize_captions(["a", "b"])
    with pytest.raises(InputError, match="context_features"):
        model(images, None, ids, mask)
    with pytest.raises(InputError, match="image_features"):
        model(images[:, :, :3], model.encode_context(["a", "b"]), ids, mask)
    with pytest.raises(InputError, match="attention_mask"):
        model(images, model.encode_context(["a", "b"]), ids, mask[:, :1])


def test_one_training_step_changes_only_trainable_weights() -> None:
    model = load_model("tiny", device="cpu", dtype="float32")  # private copy: it gets trained
    model.train()
    frozen = {
        name: p.detach().clone() for module in model.frozen_modules() for name, p in module.named_parameters()
    }
    trainable = {name: p.detach().clone() for name, p in model.prefix.named_parameters()}
    assert frozen and trainable
    assert all(not m.training for m in model.frozen_modules()) and model.prefix.training

    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, betas=(0.9, 0.96), weight_decay=0.005)
    images = model.encode_images(sample_images(3))
    context = model.encode_context(["beach", "coffee", ""])
    ids, mask = model.tokenize_captions(CAPTIONS[:3])
    model(images, context, ids, mask).loss.backward()
    optimizer.step()

    for module in model.frozen_modules():
        for name, p in module.named_parameters():
            assert not p.requires_grad and p.grad is None
            assert torch.equal(p, frozen[name]), f"frozen weight {name} changed"
    for name, p in model.prefix.named_parameters():
        assert not torch.equal(p, trainable[name]), f"trainable weight {name} did not change"


def test_trainable_parameters_are_exactly_the_prefix_network() -> None:
    model = tiny_model()
    trainable = {id(p) for p in model.trainable_parameters()}
    assert trainable == {id(p) for p in model.prefix.parameters()}
    assert all(not p.requires_grad for m in model.frozen_modules() for p in m.parameters())


def test_backbone_id_is_stable_and_names_backbones() -> None:
    backbone = tiny_model().backbone_id()
    assert backbone == tiny_model("no_fusion").backbone_id()  # ablations change no backbone
    assert "tiny-clip" in backbone and "random-gpt2" in backbone


def test_untrained_models_are_reproducible() -> None:
    """Random frozen backbones and prefix weights come from the config's seed, so every process agrees."""
    again = load_model("tiny", device="cpu")
    for (name, a), (other, b) in zip(tiny_model().state_dict().items(), again.state_dict().items(), strict=True):
        assert name == other and torch.equal(a, b), name


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="preset"):
        get_config("huge")
    with pytest.raises(ConfigError, match="ablation"):
        get_config("tiny", "no_everything")
    with pytest.raises(ConfigError, match="d_model"):
        UAPTConfig.from_dict({**PRESETS["tiny"].to_dict(), "d_model": 30})
    config = get_config("offline", "no_query")
    assert UAPTConfig.from_dict(config.to_dict()) == config
    assert PRESETS["paper"].mapping_layers == PRESETS["paper"].fusion_layers == 5
    assert PRESETS["offline"].num_visual_tokens == 16 and PRESETS["offline"].num_user_tokens == 4


def test_keywords_to_text() -> None:
    assert keywords_to_text(["beach", " sunset ", ""]) == "beach sunset"
    assert keywords_to_text([]) == ""


def test_global_image_term_starts_as_no_change_then_carries_the_pooled_image() -> None:
    """Zero-initialised, it leaves the untrained prefix as it is; once trained, the image moves every row."""
    from dataclasses import replace

    plain = tiny_model()
    with_term = load_model(replace(PRESETS["tiny"], global_image_term=True), device="cpu", dtype="float32")
    images = plain.encode_images(sample_images(2))
    context = plain.encode_context(["beach sunset", "coffee"])
    assert torch.equal(with_term.prefix_embeddings(images, context), plain.prefix_embeddings(images, context))

    term = with_term.prefix.global_image
    ids, mask = with_term.tokenize_captions(CAPTIONS[:2])
    with_term(images, context, ids, mask).loss.backward()
    assert term.linear.weight.grad is not None and term.linear.weight.grad.abs().sum() > 0

    with torch.no_grad():
        term.linear.weight.normal_()
    shift = with_term.prefix_embeddings(images, context) - plain.prefix_embeddings(images, context)
    pooled_row = with_term.prefix.to_lm.weight @ term(images.to(torch.float32)).squeeze(1).T  # (H, B)
    assert torch.allclose(shift, pooled_row.T.unsqueeze(1).expand_as(shift), atol=1e-4)  # the same shift on all rows


def test_configs_written_before_the_global_image_term_load_without_it() -> None:
    old = PRESETS["offline"].to_dict()
    del old["global_image_term"]
    assert UAPTConfig.from_dict(old).global_image_term is False
    assert PRESETS["offline"].global_image_term and not PRESETS["paper"].global_image_term
