"""Image word guidance: the tagger's vocabulary, fit, logit bias, storage and use in decoding."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import copy_checkpoint, save_checkpoint
from model.config import DecodingError, DecodingOptions
from model.factory import load_model
from model.guidance.tagger import (
    META_FILE,
    TENSORS_FILE,
    ImageWordsError,
    TaggerFit,
    caption_words,
    load_tagger,
    pool_features,
    save_tagger,
    single_token_ids,
)
from model.training.fit_tagger import bce, build_vocabulary, fit_tagger, per_word_bce
from model_fixtures import SAMPLE_KEYWORDS, sample_images, tiny_model

DIM = 16


def _toy_data(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """Images whose first feature says 'red' and second says 'blue'; every caption says 'always'."""
    features = torch.randn(count, 1, DIM, generator=torch.Generator().manual_seed(seed))
    captions = []
    for row in features[:, 0]:
        words = ["always"] + (["red"] if row[0] > 0 else []) + (["blue"] if row[1] > 0 else [])
        captions.append("#" + " ".join(words) + " 📸")
    return features, captions


@pytest.fixture(scope="module")
def fitted():
    features, captions = _toy_data(400, seed=0)
    fit = TaggerFit(min_count=5, steps=200, weight=1.5)
    tagger, figures = fit_tagger(features, captions, tiny_model().tokenizer, fit, val=_toy_data(200, seed=1))
    return tagger, figures, fit


def test_caption_words_are_lower_case_alphabetic() -> None:
    assert caption_words("Day 12 of 365: #Sunset by the LAKE 📸") == {"day", "of", "sunset", "by", "the", "lake"}


def test_only_words_with_a_single_token_form_are_steered() -> None:
    tokenizer = tiny_model().tokenizer
    spaced, bare = tokenizer(" red").input_ids, tokenizer("red").input_ids
    assert single_token_ids(tokenizer, "red") == (spaced + bare, [])
    assert single_token_ids(tokenizer, "red", "first-word") == (spaced, bare)
    assert single_token_ids(tokenizer, "red", "never") == (spaced, [])
    assert single_token_ids(tokenizer, "qzxvbnmw") == ([], [])  # many pieces whichever form
    words, token_ids, _, targets = build_vocabulary(["red red blue", "red qzxvbnmw", "blue"], tokenizer, min_count=2)
    assert words == ["blue", "red"]  # qzxvbnmw is too rare, and no single token
    assert targets.tolist() == [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]  # presence, not counts
    with pytest.raises(ImageWordsError, match="nothing to fit"):
        build_vocabulary(["red"], tokenizer, min_count=2)
    with pytest.raises(ImageWordsError, match="bare_form must be one of everywhere, first-word, never"):
        TaggerFit(bare_form="sometimes")
    with pytest.raises(ImageWordsError, match="bare_form must be one of"):
        single_token_ids(tokenizer, "red", "first_word")


def test_the_tagger_learns_which_words_an_image_makes_likely(fitted) -> None:
    tagger, figures, _ = fitted
    assert tagger.words == ["always", "blue", "red"]
    assert figures["val_bce"] < 0.5 * figures["val_bce_prior_only"]
    features, captions = _toy_data(400, seed=0)
    assert figures["train_bce"] == pytest.approx(bce(tagger, features, captions), rel=1e-6)  # the weights returned
    red_not_blue = torch.zeros(1, 1, DIM)
    red_not_blue[0, 0, 0], red_not_blue[0, 0, 1] = 3.0, -3.0
    always, blue, red = tagger.pmi(red_not_blue)[0].tolist()
    assert red > 0.5 and blue < -0.5  # prior 1/2 each: log 2 is red's most, the cap bounds blue's fall
    assert abs(always) < 0.05  # in every caption: the image says nothing about it
    assert -tagger.pmi_cap <= blue


def test_token_bias_puts_weight_times_pmi_on_each_words_tokens_only(fitted) -> None:
    tagger, _, _ = fitted
    features, _ = _toy_data(3, seed=2)
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    biases = tagger.token_bias(features, vocab, weight=2.0)
    first, bias = biases.first, biases.later
    assert first is bias  # a default tagger steers the same tokens at every step
    pmi = tagger.pmi(features)
    assert bias.shape == (3, vocab)
    steered = set()
    for column, ids in enumerate(tagger.token_ids):
        for token in ids:
            assert torch.allclose(bias[:, token], 2.0 * pmi[:, column])
            steered.add(token)
    others = [t for t in range(vocab) if t not in steered]
    assert torch.count_nonzero(bias[:, others]) == 0


def test_save_and_load_round_trip_and_refuse_damage(fitted, tmp_path: Path) -> None:
    tagger, figures, fit = fitted
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    assert load_tagger(tmp_path, DIM, vocab) is None  # no tagger is not an error
    save_tagger(tagger, tmp_path, fit, figures)
    loaded = load_tagger(tmp_path, DIM, vocab)
    features, _ = _toy_data(5, seed=3)
    assert loaded.words == tagger.words and loaded.weight == 1.5
    assert torch.equal(loaded.token_bias(features, vocab, 1.0).later, tagger.token_bias(features, vocab, 1.0).later)
    with pytest.raises(ImageWordsError, match="image features"):
        load_tagger(tmp_path, DIM + 1, vocab)
    with pytest.raises(ImageWordsError, match="vocabulary"):
        load_tagger(tmp_path, DIM, 10)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "weight": -1.0}))
    with pytest.raises(ImageWordsError, match="weight"):
        load_tagger(tmp_path, DIM, vocab)
    (tmp_path / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "words"}))
    with pytest.raises(ImageWordsError, match="do not describe a tagger"):
        load_tagger(tmp_path, DIM, vocab)
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "words": meta["words"][:-1], "token_ids": meta["token_ids"][:-1]}))
    with pytest.raises(ImageWordsError, match="must match|do not describe"):
        load_tagger(tmp_path, DIM, vocab)
    (tmp_path / TENSORS_FILE).write_bytes((tmp_path / TENSORS_FILE).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ImageWordsError, match="checksum"):
        load_tagger(tmp_path, DIM, vocab)


@pytest.fixture(scope="module")
def guided_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint with a tagger fitted on its own image features and toy captions."""
    model = tiny_model()
    path = save_checkpoint(model, tmp_path_factory.mktemp("guided") / "ckpt")
    images = model.encode_images(sample_images(6) * 10)
    captions = ["a red one" if i % 2 else "a blue one" for i in range(60)]
    tagger, figures = fit_tagger(images, captions, model.tokenizer, TaggerFit(min_count=5, steps=100, weight=40.0))
    save_tagger(tagger, path, TaggerFit(min_count=5, steps=100, weight=40.0), figures)
    return path


def _captions(model, **kwargs) -> list[list[list[int]]]:
    images = model.encode_images(sample_images(3))
    context = model.encode_context([" ".join(k) for k in SAMPLE_KEYWORDS[:3]])
    return [[c.token_ids for c in image] for image in model.generate(images, context, DecodingOptions(max_new_tokens=6, **kwargs))]


def test_a_checkpoints_tagger_steers_generate_and_travels_with_a_copy(guided_checkpoint: Path, tmp_path: Path) -> None:
    plain = tiny_model()
    guided = load_model("tiny", device="cpu", checkpoint=guided_checkpoint)
    assert plain.guidance.tagger is None and guided.guidance.tagger is not None and guided.guidance.tagger.weight == 40.0
    assert _captions(guided, image_word_weight=0.0) == _captions(plain)  # 0 turns it off
    assert _captions(guided) != _captions(plain)  # the stored weight steers
    assert _captions(guided) == _captions(guided, image_word_weight=40.0)
    copied = load_model("tiny", device="cpu", checkpoint=copy_checkpoint(guided_checkpoint, tmp_path / "copy", dtype=torch.float32))
    assert _captions(copied) == _captions(guided)
    with pytest.raises(DecodingError, match="image_word_weight"):
        _captions(guided, image_word_weight=-1.0)


def test_after_a_prompt_generate_steers_the_first_token_as_a_later_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first-token bias is for the caption's first word; after a prompt the first token continues the prompt."""
    from model.generation import TokenBias

    model = tiny_model()
    vocab = model.lm.get_input_embeddings().num_embeddings
    first, later = torch.zeros(2, vocab), torch.zeros(2, vocab)
    first[:, 1234] = 100.0
    monkeypatch.setattr(model, "word_bias", lambda features, weight: TokenBias(first, later))
    images = model.encode_images(sample_images(2))
    context = model.encode_context([" ".join(k) for k in SAMPLE_KEYWORDS[:2]])
    bare, prompted = model.generate(images, context, DecodingOptions(num_beams=1, max_new_tokens=2), prompts=["", "a photo of"])
    assert bare[0].token_ids[0] == 1234 and prompted[0].token_ids[0] != 1234


def test_generate_applies_the_plausibility_gate_stored_with_the_tagger(guided_checkpoint: Path) -> None:
    plain = tiny_model()
    guided = load_model("tiny", device="cpu", checkpoint=guided_checkpoint)
    assert guided.guidance_plausibility == 0.0 and plain.guidance_plausibility == 0.0
    assert _captions(guided, num_beams=1) != _captions(plain, num_beams=1)
    guided.guidance.tagger.plausibility = 0.999  # only each step's top token may move: greedy keeps the LM's choice
    assert guided.guidance_plausibility == 0.999
    assert _captions(guided, num_beams=1) == _captions(plain, num_beams=1)


def test_a_half_precision_tagger_still_gives_a_float32_bias(fitted) -> None:
    """load_model casts the whole model to half precision on CUDA, the read-out with it."""
    tagger, _, _ = fitted
    features, _ = _toy_data(2, seed=4)
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    full = tagger.token_bias(features, vocab, 1.0).later
    half = copy.deepcopy(tagger).to(torch.bfloat16).token_bias(features, vocab, 1.0).later
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, atol=0.1, rtol=0.05)


def test_min_val_gain_keeps_only_the_words_the_image_predicts() -> None:
    features, captions = _toy_data(400, seed=0)
    coin = torch.rand(400, generator=torch.Generator().manual_seed(9)) < 0.5
    captions = [text + (" maybe" if heads else "") for text, heads in zip(captions, coin.tolist())]  # chance, not image
    val_features, val_captions = _toy_data(200, seed=1)
    val_captions = [text + " maybe" * (i % 2) for i, text in enumerate(val_captions)]
    tokenizer = tiny_model().tokenizer
    everything, _ = fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200), val=(val_features, val_captions))
    visual, figures = fit_tagger(
        features, captions, tokenizer, TaggerFit(min_count=5, steps=200, min_val_gain=0.05), val=(val_features, val_captions)
    )
    assert everything.words == ["always", "blue", "maybe", "red"]
    assert visual.words == ["blue", "red"] and figures["words_steered"] == 2
    probe, _ = _toy_data(5, seed=3)
    torch.testing.assert_close(visual.pmi(probe), everything.pmi(probe)[:, [1, 3]])  # the same read-out, cut
    with pytest.raises(ImageWordsError, match="val images"):
        fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=5, min_val_gain=0.05))


def test_pool_features_reads_the_mean_then_each_horizontal_band_top_first() -> None:
    grid = torch.arange(16.0).reshape(1, 16, 1)  # a 4 x 4 grid in raster order: rows 0-3, 4-7, 8-11, 12-15
    assert pool_features(grid, 1).tolist() == [[7.5]]
    assert pool_features(grid, 2).tolist() == [[7.5, 3.5, 11.5]]  # the mean, rows 0-1, rows 2-3
    assert pool_features(grid.expand(2, 16, 3), 4).shape == (2, 15)  # (1 + 4 bands) x 3 channels
    with pytest.raises(ImageWordsError, match="square grid"):
        pool_features(torch.zeros(1, 15, 1), 2)
    with pytest.raises(ImageWordsError, match="square grid"):
        pool_features(grid, 5)  # more bands than rows


def test_bare_form_never_steers_no_bare_form(fitted) -> None:
    both, _, _ = fitted
    features, captions = _toy_data(400, seed=0)
    tokenizer = tiny_model().tokenizer
    spaced, _ = fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200, weight=1.5, bare_form="never"))
    assert spaced.words == both.words
    assert spaced.token_ids == [tokenizer(" " + word).input_ids for word in spaced.words]
    assert spaced.first_token_ids == [[] for _ in spaced.words]
    assert any(len(ids) == 2 for ids in both.token_ids)  # by default the bare form is steered too
    assert torch.equal(spaced.linear.weight, both.linear.weight)  # the read-out is the same; only the steered tokens differ


def test_bare_form_first_word_steers_the_bare_form_at_the_first_token_only(fitted, tmp_path: Path) -> None:
    both, figures, _ = fitted
    features, captions = _toy_data(400, seed=0)
    tokenizer = tiny_model().tokenizer
    fit = TaggerFit(min_count=5, steps=200, weight=1.5, bare_form="first-word")
    tagger, _ = fit_tagger(features, captions, tokenizer, fit)
    assert tagger.token_ids == [tokenizer(" " + word).input_ids for word in tagger.words]
    assert tagger.first_token_ids == [tokenizer(word).input_ids for word in tagger.words]
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    biases = tagger.token_bias(features[:3], vocab, 2.0)
    first, later = biases.first, biases.later
    assert torch.equal(first, both.token_bias(features[:3], vocab, 2.0).first)  # the first token: both forms
    bare = [ids[0] for ids in tagger.first_token_ids]
    assert torch.count_nonzero(later[:, bare]) == 0 and torch.count_nonzero(first[:, bare]) > 0
    save_tagger(tagger, tmp_path, fit, figures)
    loaded = load_tagger(tmp_path, DIM, vocab)
    assert loaded.first_token_ids == tagger.first_token_ids
    assert all(torch.equal(a, b) for a, b in zip(loaded.token_bias(features[:3], vocab, 2.0), (first, later)))


def _layout_data(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """2 x 2 grids whose one bright token is 'up' in the top row, 'down' in the bottom: the same mean either way."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(count, 4, DIM, generator=generator) * 0.1
    spots = torch.randint(0, 4, (count,), generator=generator)
    features[torch.arange(count), spots, 0] += 3.0
    return features, ["#" + ("up" if spot < 2 else "down") + " here" for spot in spots.tolist()]


def test_bands_let_the_tagger_tell_above_from_below(tmp_path: Path) -> None:
    features, captions = _layout_data(400, seed=0)
    val = _layout_data(200, seed=1)
    tokenizer = tiny_model().tokenizer
    mean_only, mean_figures = fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200), val=val)
    banded, banded_figures = fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200, bands=2), val=val)
    assert banded_figures["val_bce"] < 0.5 * mean_figures["val_bce"]  # the mean cannot see where the bright spot is
    assert mean_figures["val_bce"] > 0.8 * mean_figures["val_bce_prior_only"]
    top_spot = torch.zeros(1, 4, DIM)
    top_spot[0, 1, 0] = 3.0  # the top row's right token
    down, here, up = banded.pmi(top_spot)[0].tolist()
    assert up > 0.5 and down < -0.5 and abs(here) < 0.05
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    banded.plausibility = 0.05
    save_tagger(banded, tmp_path, TaggerFit(bands=2), banded_figures)
    loaded = load_tagger(tmp_path, DIM, vocab)
    assert loaded.bands == 2 and loaded.plausibility == 0.05
    torch.testing.assert_close(loaded.pmi(val[0]), banded.pmi(val[0]), rtol=0, atol=0)


def test_a_tagger_saved_before_bands_existed_loads_as_the_mean(fitted, tmp_path: Path) -> None:
    tagger, figures, fit = fitted
    save_tagger(tagger, tmp_path, fit, figures)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["bands"], meta["plausibility"], meta["first_token_ids"]
    meta["format"] = "uapt-image-words/1"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    loaded = load_tagger(tmp_path, DIM, vocab)
    features, _ = _toy_data(4, seed=6)
    assert loaded.bands == 1 and loaded.plausibility == 0.0
    assert loaded.first_token_ids == [[] for _ in loaded.words]  # steered the same at every token
    torch.testing.assert_close(loaded.pmi(features), tagger.pmi(features), rtol=0, atol=0)
    meta["format"] = "uapt-image-words/0"
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ImageWordsError, match="not in format"):
        load_tagger(tmp_path, DIM, vocab)


def _one_clear_word_data(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """'red' when the first feature is positive; 'coin' a coin toss the image says nothing about."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(count, 1, DIM, generator=generator)
    tosses = torch.rand(count, generator=generator) < 0.5
    return features, [
        "#" + " ".join((["red"] if row[0] > 0 else []) + (["coin"] if toss else []) + ["here"])
        for row, toss in zip(features[:, 0], tosses.tolist())
    ]


def test_several_penalties_are_chosen_word_by_word_on_val() -> None:
    features, captions = _one_clear_word_data(300, seed=0)
    val = _one_clear_word_data(300, seed=1)
    tokenizer = tiny_model().tokenizer
    penalties = (1e-1, 1e-4)
    single = [fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200, l2=(l2,)), val=val)[0]
              for l2 in penalties]
    both, figures = fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200, l2=penalties), val=val)
    per_word = [per_word_bce(tagger, *val) for tagger in single]
    column = {word: j for j, word in enumerate(both.words)}
    # 'red' is read best with the weak penalty, the coin toss with the strong one
    assert per_word[1][column["red"]] < per_word[0][column["red"]]
    assert per_word[0][column["coin"]] < per_word[1][column["coin"]]
    for word, source in (("red", single[1]), ("coin", single[0])):
        assert torch.equal(both.linear.weight[column[word]], source.linear.weight[column[word]])
        assert torch.equal(both.linear.bias[column[word]], source.linear.bias[column[word]])
    torch.testing.assert_close(per_word_bce(both, *val), torch.minimum(*per_word), rtol=0, atol=1e-6)
    assert sum(figures["words_per_l2"].values()) == len(both.words) and figures["words_per_l2"]["0.0001"] >= 1
    with pytest.raises(ImageWordsError, match="needs val"):
        fit_tagger(features, captions, tokenizer, TaggerFit(min_count=5, steps=200, l2=penalties))


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"bands": 0}, "bands"), ({"plausibility": 1.0}, "plausibility"), ({"min_count": 0}, "min_count"), ({"l2": (-1.0,)}, "l2"), ({"l2": ()}, "l2"), ({"l2": (1e-3, 1e-3)}, "once"), ({"min_val_gain": 1.0}, "min_val_gain"), ({"weight": -2.0}, "weight")],
)
def test_fit_settings_are_checked(fields: dict, message: str) -> None:
    with pytest.raises(ImageWordsError, match=message):
        TaggerFit(**fields)


def test_one_penalty_may_be_given_as_a_number() -> None:
    assert TaggerFit(l2=3e-4).l2 == (3e-4,) and TaggerFit(l2=[1e-3, 1e-4]).l2 == (1e-3, 1e-4)
    with pytest.raises(ImageWordsError, match="l2"):
        TaggerFit(l2=-1.0)
