"""Trainer on the tiny preset: it learns, reuses the feature cache, and resumes exactly.

Runs compared with each other fix `precision`: on a CPU with native bfloat16, auto times
both dtypes and two fresh runs may each pick a different one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from model.config import PRESETS
from model_fixtures import FakeDtypeTimings, assert_same_trained_weights, pretend_auto_times_both_dtypes
from model.data.dataset import load_posts
from model.data.synth import write_dataset
from model.training.train_config import TrainConfig
from model.data.samples import Sample
from model.training.features import Split
from model.config import ConfigError
from model import device
from model.evaluation.probes import same_user_shift
from model.training.trainer import cold_start_contexts, cosine_with_warmup, train

TINY = PRESETS["tiny"]  # its random GPT-2 is initialised wide enough for a prefix to steer it


@pytest.fixture(scope="module")
def posts(tmp_path_factory: pytest.TempPathFactory):
    """2 users x 4 posts: 4 train, 2 val, 2 test."""
    return load_posts(write_dataset(tmp_path_factory.mktemp("d"), users=2, posts_per_user=4, seed=5))


def test_overfits_a_small_set(posts, tmp_path: Path) -> None:
    """One batch holds the whole train split, so each step's loss is the loss on the set."""
    config = TrainConfig(epochs=60, batch_size=4, lr=1e-2, warmup_steps=2)
    result = train(posts, preset=TINY, out_dir=tmp_path / "ckpt", config=config, cache_dir=tmp_path / "cache")
    assert result.steps == 60
    assert result.train_losses[-1] < 0.7 * result.train_losses[0]
    metrics = json.loads((tmp_path / "ckpt" / "metrics.json").read_text())
    assert len(metrics["val_losses"]) == 60 and metrics["warmup"] == 2
    assert (tmp_path / "ckpt" / "curve.png").stat().st_size > 1000
    assert (tmp_path / "ckpt" / "trainable.safetensors").is_file()


def test_second_run_reuses_feature_cache(posts, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, batch_size=4, precision="float32")
    first = train(posts, preset=TINY, out_dir=tmp_path / "a", config=config, cache_dir=tmp_path / "cache")
    assert (first.encoded_images, first.encoded_contexts) == (6, 6)  # 4 train + 2 val posts, distinct contexts
    second = train(posts, preset=TINY, out_dir=tmp_path / "b", config=config, cache_dir=tmp_path / "cache")
    assert (second.encoded_images, second.encoded_contexts) == (0, 0)
    assert second.train_losses == pytest.approx(first.train_losses)


def test_resume_continues_from_saved_step(posts, tmp_path: Path) -> None:
    """Stopped mid-epoch at step 3 and resumed, a run ends exactly where an unbroken one does."""
    config = TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1, precision="float32")  # 2 steps per epoch
    cache = tmp_path / "cache"
    whole = train(posts, preset=TINY, out_dir=tmp_path / "whole", config=config, cache_dir=cache)
    part = train(posts, preset=TINY, out_dir=tmp_path / "part",
                 config=dataclasses.replace(config, max_steps=3), cache_dir=cache)
    assert part.steps == 3
    saved_moments = load_file(str(tmp_path / "part" / "train_state.safetensors"))
    resumed = train(posts, preset=TINY, out_dir=tmp_path / "resumed", config=config, cache_dir=cache,
                    resume=tmp_path / "part")
    assert resumed.steps == 4
    assert resumed.train_losses[:3] == part.train_losses
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5)
    assert_same_trained_weights(tmp_path / "whole", tmp_path / "resumed")
    step_counts = {k: v for k, v in saved_moments.items() if k.endswith(".step")}
    assert step_counts and all(float(v) == 3 for v in step_counts.values())


def test_wall_time_adds_up_over_resumes_and_a_finished_run_keeps_its_own(posts, tmp_path: Path) -> None:
    """metrics.json's wall_s is the whole run's, however many calls it took; resuming a finished run adds nothing."""
    config = TrainConfig(epochs=1, batch_size=2, warmup_steps=1)  # 2 steps
    cache = tmp_path / "cache"
    part = train(posts, preset=TINY, out_dir=tmp_path / "run", config=dataclasses.replace(config, max_steps=1),
                 cache_dir=cache)
    rest = train(posts, preset=TINY, out_dir=tmp_path / "run", config=config, cache_dir=cache, resume=tmp_path / "run")
    assert rest.steps == 2 and rest.wall_s > part.wall_s
    again = train(posts, preset=TINY, out_dir=tmp_path / "run", config=config, cache_dir=cache, resume=tmp_path / "run")
    assert again.steps == 2 and again.train_losses == rest.train_losses
    assert part.wall_s < again.wall_s <= rest.wall_s
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["wall_s"] == again.wall_s


def test_resume_refuses_a_folder_without_training_state(posts, tmp_path: Path) -> None:
    from model.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="nothing-here"):
        train(posts, preset=TINY, out_dir=tmp_path / "x", config=TrainConfig(epochs=1), cache_dir=tmp_path / "c",
              resume=tmp_path / "nothing-here")


@pytest.mark.parametrize(
    ("option", "value", "off"),
    [
        ("context_dropout", 0.5, 0.0),  # the swapped rows depend on the step alone: resuming does not redraw them
        ("visual_lr_scale", 3.0, 1.0),  # both parameter groups' lr and moments come back from the saved state
    ],
)
def test_resume_is_exact_with_an_option_on(option: str, value: float, off: float, posts, tmp_path: Path) -> None:
    config = dataclasses.replace(TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1, precision="float32"),
                                 **{option: value})
    cache = tmp_path / "cache"
    whole = train(posts, preset=TINY, out_dir=tmp_path / "whole", config=config, cache_dir=cache)
    plain = train(posts, preset=TINY, out_dir=tmp_path / "plain",
                  config=dataclasses.replace(config, **{option: off}), cache_dir=cache)
    assert whole.train_losses != pytest.approx(plain.train_losses, rel=1e-6)  # the option did change training
    train(posts, preset=TINY, out_dir=tmp_path / "part", config=dataclasses.replace(config, max_steps=3), cache_dir=cache)
    resumed = train(posts, preset=TINY, out_dir=tmp_path / "resumed", config=config, cache_dir=cache,
                    resume=tmp_path / "part")
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5)


def test_a_prefix_with_dropout_trains_the_same_twice_and_resumes_exactly(posts, tmp_path: Path) -> None:
    """Dropout masks come from a seed per step, not from whatever the global RNG held."""
    config = TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1, precision="float32")
    cache = tmp_path / "cache"
    with_dropout = dataclasses.replace(TINY, dropout=0.3)
    whole = train(posts, preset=with_dropout, out_dir=tmp_path / "whole", config=config, cache_dir=cache)
    torch.rand(5)  # whatever ran before must not matter
    again = train(posts, preset=with_dropout, out_dir=tmp_path / "again", config=config, cache_dir=cache)
    plain = train(posts, preset=TINY, out_dir=tmp_path / "plain", config=config, cache_dir=cache)
    assert again.train_losses == whole.train_losses
    assert plain.train_losses != pytest.approx(whole.train_losses, rel=1e-6)  # dropout did change training
    train(posts, preset=with_dropout, out_dir=tmp_path / "part", config=dataclasses.replace(config, max_steps=3),
          cache_dir=cache)
    resumed = train(posts, preset=with_dropout, out_dir=tmp_path / "resumed", config=config, cache_dir=cache,
                    resume=tmp_path / "part")
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5)


def test_visual_lr_scale_puts_exactly_the_image_path_in_a_faster_group() -> None:
    from model.factory import load_model
    from model.training.trainer import parameter_groups

    model = load_model(TINY, device="cpu")
    assert parameter_groups(model, TrainConfig(lr=1e-3)) == [{"params": model.trainable_parameters()}]
    rest, visual = parameter_groups(model, TrainConfig(lr=1e-3, visual_lr_scale=3.0))
    assert visual["lr"] == pytest.approx(3e-3) and "lr" not in rest
    names = {id(p): n for n, p in model.prefix.named_parameters()}
    visual_names = {names[id(p)].split(".")[0] for p in visual["params"]}
    rest_names = {names[id(p)].split(".")[0] for p in rest["params"]}
    assert visual_names == {"visual_projection", "mapping"} | ({"global_image"} if model.prefix.global_image else set())
    assert "to_lm" in rest_names and "user_projection" in rest_names and not visual_names & rest_names
    assert len(visual["params"]) + len(rest["params"]) == len(model.trainable_parameters())
    with pytest.raises(ConfigError, match="visual_lr_scale"):
        TrainConfig(visual_lr_scale=0.0)


def test_init_from_starts_a_new_stage_from_trained_weights(posts, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = tmp_path / "first"
    train(posts, preset=TINY, out_dir=first, config=TrainConfig(epochs=3, batch_size=2, lr=3e-3, precision="float32"),
          cache_dir=cache)
    still = TrainConfig(epochs=1, batch_size=2, lr=1e-12, max_steps=1, precision="float32")  # a step too small to move any weight
    second = train(posts, preset=TINY, out_dir=tmp_path / "second", config=still, cache_dir=cache, init_from=first)
    fresh = train(posts, preset=TINY, out_dir=tmp_path / "fresh", config=still, cache_dir=cache)
    trained, staged = (load_file(str(d / "trainable.safetensors")) for d in (first, tmp_path / "second"))
    for name, tensor in trained.items():
        torch.testing.assert_close(staged[name], tensor)
    assert second.train_losses[0] < fresh.train_losses[0]  # it starts where the first stage ended, not from scratch
    assert second.steps == 1  # a new schedule, not the first stage's step count
    metrics = json.loads((tmp_path / "second" / "metrics.json").read_text())
    assert metrics["init_from"] == str(first)
    # a resumed second stage still names its first, in metrics.json and in the checkpoint
    two_steps = dataclasses.replace(still, max_steps=2)
    train(posts, preset=TINY, out_dir=tmp_path / "second", config=two_steps, cache_dir=cache, resume=tmp_path / "second")
    assert json.loads((tmp_path / "second" / "metrics.json").read_text())["init_from"] == str(first)
    assert json.loads((tmp_path / "second" / "config.json").read_text())["extra"]["init_from"] == str(first)
    from model.training.trainer import TrainingError

    with pytest.raises(TrainingError, match="exclude each other"):
        train(posts, preset=TINY, out_dir=tmp_path / "x", config=still, cache_dir=cache, init_from=first, resume=first)


def test_a_second_stage_neither_uses_nor_keeps_the_first_stages_image_word_tagger(
    posts, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from model.factory import load_model
    from model.guidance.tagger import META_FILE, TaggerFit, save_tagger
    from model.training.fit_tagger import fit_tagger

    cache, first = tmp_path / "cache", tmp_path / "first"
    one_step = TrainConfig(epochs=1, batch_size=2, lr=1e-3, max_steps=1, precision="float32", probe_posts=2)
    train(posts, preset=TINY, out_dir=first, config=one_step, cache_dir=cache)
    model = load_model(TINY, device="cpu")
    features = torch.randn(20, 1, model.image_encoder.dim, generator=torch.Generator().manual_seed(0))
    tagger, figures = fit_tagger(features, ["a red one"] * 20, model.tokenizer, TaggerFit(min_count=5, steps=5))
    save_tagger(tagger, first, TaggerFit(min_count=5, steps=5), figures)
    with caplog.at_level(logging.INFO, logger="model.training.trainer"):
        train(posts, preset=TINY, out_dir=tmp_path / "second", config=one_step, cache_dir=cache, init_from=first)
    assert "image-word tagger: the run does not keep it" in caplog.text
    assert not (tmp_path / "second" / META_FILE).exists()


def test_loss_weights_make_the_loss_a_weighted_mean_over_caption_tokens() -> None:
    from model.factory import load_model
    from model.training.loss import LossWeights

    model = load_model(TINY, device="cpu")
    input_ids, mask = model.tokenize_captions(["a red cat on a mat", "blue"])
    weights = LossWeights(torch.tensor(model.tokenizer(" red").input_ids + model.tokenizer("blue").input_ids), 3.0)
    token_weights = weights.of(input_ids)
    assert sorted(set(token_weights[mask.bool()].tolist())) == [1.0, 3.0] and token_weights.sum() > mask.sum()
    images = torch.randn(2, model.image_encoder.num_tokens, model.image_encoder.dim, generator=torch.Generator().manual_seed(0))
    contexts = model.encode_context(["red", "blue"])
    plain = model(images, contexts, input_ids, mask)
    weighted = model(images, contexts, input_ids, mask, token_weights)
    nll = torch.nn.functional.cross_entropy(plain.logits.float().transpose(1, 2), input_ids, reduction="none")
    expected = (nll * token_weights * mask).sum() / (token_weights * mask).sum()
    torch.testing.assert_close(weighted.loss, expected)
    torch.testing.assert_close(plain.loss, (nll * mask).sum() / mask.sum())
    assert not torch.isclose(weighted.loss, plain.loss)


def test_image_word_loss_weight_weights_the_words_the_tagger_predicts_and_resumes_exactly(posts, tmp_path: Path) -> None:
    """The words come from the --init-from (or --image-words-from) checkpoint's tagger; a resumed run keeps them."""
    from model.data.samples import train_profiles
    from model.factory import load_model
    from model.guidance.tagger import TaggerFit, save_tagger
    from model.training.fit_tagger import fit_tagger
    from model.training.features import FeatureCache, encode_split
    from model.training.trainer import TrainingError

    cache, first = tmp_path / "cache", tmp_path / "first"
    config = TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1, precision="float32", probe_posts=0)
    train(posts, preset=TINY, out_dir=first, config=dataclasses.replace(config, max_steps=1), cache_dir=cache)
    weighted = dataclasses.replace(config, image_word_loss_weight=3.0)
    with pytest.raises(TrainingError, match="needs an image-word tagger"):
        train(posts, preset=TINY, out_dir=tmp_path / "x", config=weighted, cache_dir=cache, init_from=first)
    model = load_model(TINY, device="cpu")
    val = encode_split(posts, "val", config.keywords_k, FeatureCache(cache, model), train_profiles(posts))
    fit = TaggerFit(min_count=1, steps=300, l2=(0.0,))  # learns the val captions by heart: it predicts their words
    tagger, figures = fit_tagger(val.image_features[:], [s.text for s in val.samples], model.tokenizer, fit)
    save_tagger(tagger, first, fit, figures)

    whole = train(posts, preset=TINY, out_dir=tmp_path / "whole", config=weighted, cache_dir=cache, init_from=first)
    plain = train(posts, preset=TINY, out_dir=tmp_path / "plain", config=config, cache_dir=cache, init_from=first)
    assert whole.train_losses != pytest.approx(plain.train_losses, rel=1e-6)  # the weighting did change training
    state = json.loads((tmp_path / "whole" / "train_state.json").read_text())["history"]
    assert state["image_words"] and set(state["image_words"]) <= set(tagger.words)
    both_forms = {t for word in state["image_words"] for t in model.tokenizer(" " + word).input_ids + model.tokenizer(word).input_ids}
    assert set(state["image_word_token_ids"]) <= both_forms and len(state["image_word_token_ids"]) > len(state["image_words"])
    assert json.loads((tmp_path / "whole" / "metrics.json").read_text())["image_words"] == state["image_words"]
    train(posts, preset=TINY, out_dir=tmp_path / "part", config=dataclasses.replace(weighted, max_steps=2),
          cache_dir=cache, init_from=first)
    with pytest.raises(TrainingError, match="started with image_word_loss_weight 3.0"):
        train(posts, preset=TINY, out_dir=tmp_path / "x", config=config, cache_dir=cache, resume=tmp_path / "part")
    resumed = train(posts, preset=TINY, out_dir=tmp_path / "resumed", config=weighted, cache_dir=cache,
                    resume=tmp_path / "part")
    assert resumed.train_losses == pytest.approx(whole.train_losses, rel=1e-5)
    # from scratch, the words come from --image-words-from, and a resume keeps them
    train(posts, preset=TINY, out_dir=tmp_path / "scratch", config=dataclasses.replace(weighted, max_steps=1),
          cache_dir=cache, image_words_from=first)
    assert json.loads((tmp_path / "scratch" / "config.json").read_text())["extra"]["image_words_from"] == str(first)
    with pytest.raises(TrainingError, match="took its image words from"):
        train(posts, preset=TINY, out_dir=tmp_path / "scratch", config=weighted, cache_dir=cache,
              resume=tmp_path / "scratch", image_words_from=tmp_path / "elsewhere")
    train(posts, preset=TINY, out_dir=tmp_path / "scratch", config=weighted, cache_dir=cache, resume=tmp_path / "scratch")
    scratch = json.loads((tmp_path / "scratch" / "metrics.json").read_text())
    assert (scratch["init_from"], scratch["image_words_from"]) == (None, str(first))
    assert scratch["image_words"] == state["image_words"]
    for where, error in ((tmp_path / "plain", "has no image-word tagger"), (tmp_path / "nowhere", "is not a folder")):
        with pytest.raises(TrainingError, match=error):
            train(posts, preset=TINY, out_dir=tmp_path / "x", config=weighted, cache_dir=cache, image_words_from=where)
    with pytest.raises(TrainingError, match="give that weight too"):
        train(posts, preset=TINY, out_dir=tmp_path / "x", config=config, cache_dir=cache, image_words_from=first)
    with pytest.raises(ConfigError, match="image_word_loss_weight"):
        TrainConfig(image_word_loss_weight=0.0)


def test_cold_start_contexts_swap_a_seeded_share_of_rows_for_the_new_user_context() -> None:
    samples = [Sample(f"p{i}", "u", Path(f"{i}.png"), "text", (), "") for i in range(400)]
    own = torch.arange(1, 401, dtype=torch.float32).unsqueeze(1).expand(400, 3).contiguous()
    split = Split(samples, torch.zeros(400, 1, 4), own)
    index = torch.arange(400)
    new_user = torch.full((3,), -1.0)
    contexts = cold_start_contexts(split, index, new_user, share=0.3, seed=0, step=7)
    swapped = (contexts == new_user).all(dim=1)
    assert 0.2 < swapped.float().mean() < 0.4
    assert torch.equal(contexts[~swapped], own[~swapped])  # the other rows keep their own profile
    assert torch.equal(split.context_features, own)  # the split itself is untouched
    assert torch.equal(cold_start_contexts(split, index, new_user, 0.3, 0, 7), contexts)
    assert not torch.equal(cold_start_contexts(split, index, new_user, 0.3, 0, 8), contexts)
    assert torch.equal(cold_start_contexts(split, index, new_user, 0.0, 0, 7), own)
    with pytest.raises(ConfigError, match="context_dropout"):
        TrainConfig(context_dropout=1.0)


def test_schedule_warms_up_then_decays_to_zero() -> None:
    factor = cosine_with_warmup(warmup=4, total=20)
    assert [factor(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert factor(4) == pytest.approx(1.0)
    assert factor(12) == pytest.approx(0.5)
    assert factor(20) == pytest.approx(0.0)
    assert TrainConfig().resolved_warmup(132_000) == 6000  # the paper's warm-up at its scale
    assert TrainConfig().resolved_warmup(60) == 3  # 5% of a small run
    assert TrainConfig(warmup_steps=7).resolved_warmup(60) == 7


def test_image_reliance_pairs_each_caption_with_another_image_of_its_own_user() -> None:
    users = ["a", "b", "a", "a", "b", "c"]
    samples = [Sample(f"p{i}", user, Path(f"{i}.png"), "text", (), "") for i, user in enumerate(users)]
    split = Split(samples, torch.zeros(len(users), 1, 4), torch.zeros(len(users), 3))
    assert same_user_shift(split).tolist() == [2, 4, 3, 0, 1, 5]  # a: 0->2->3->0, b: 1<->4, c alone keeps its own


def test_training_records_image_reliance(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", users=2, posts_per_user=8, seed=0)
    out = tmp_path / "run"
    train(load_posts(data), preset="tiny", out_dir=out, config=TrainConfig(epochs=1, batch_size=4, probe_posts=0),
          cache_dir=tmp_path / "cache", device="cpu")
    metrics = json.loads((out / "metrics.json").read_text())
    steps = [row[0] for row in metrics["image_reliance"]]
    assert steps == [row[0] for row in metrics["val_losses"]] and steps
    assert all(isinstance(row[1], float) for row in metrics["image_reliance"])


def test_auto_precision_keeps_the_dtype_that_timed_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_auto_times_both_dtypes(monkeypatch)
    monkeypatch.setattr(device, "time_lm_dtypes", FakeDtypeTimings(torch.bfloat16, torch.float32))
    for faster in (torch.bfloat16, torch.float32):
        assert device.choose_lm_dtype(None, TrainConfig().precision, torch.device("cpu"), torch.zeros) == faster


def test_timing_both_precisions_changes_nothing_that_is_trained(
    posts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Auto on a CPU with native bfloat16 times both dtypes first; the run then equals one with its pick fixed.

    A timing pass that stepped the optimizer, left gradients behind or rounded the LM's
    float32 weights would show in the losses or the trained weights.
    """
    pretend_auto_times_both_dtypes(monkeypatch)
    config = TrainConfig(epochs=2, batch_size=2, lr=3e-3, warmup_steps=1)
    with caplog.at_level(logging.INFO, logger=device.__name__):
        auto = train(posts, preset=TINY, out_dir=tmp_path / "auto", config=config, cache_dir=tmp_path / "cache")
    assert "precision auto:" in caplog.text and "in float32" in caplog.text and "in bfloat16" in caplog.text
    picked = json.loads((tmp_path / "auto" / "metrics.json").read_text())["lm_dtype"]
    fixed = train(posts, preset=TINY, out_dir=tmp_path / "fixed", config=dataclasses.replace(config, precision=picked),
                  cache_dir=tmp_path / "cache")
    assert auto.train_losses == fixed.train_losses
    fixed_weights = load_file(str(tmp_path / "fixed" / "trainable.safetensors"))
    for name, tensor in load_file(str(tmp_path / "auto" / "trainable.safetensors")).items():
        assert torch.equal(tensor, fixed_weights[name]), name


def test_a_resumed_run_keeps_the_dtype_auto_timed_when_it_started(posts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pretend_auto_times_both_dtypes(monkeypatch)
    timings = FakeDtypeTimings(torch.bfloat16, torch.float32)  # a second timing would pick the other
    monkeypatch.setattr(device, "time_lm_dtypes", timings)
    config = TrainConfig(epochs=2, batch_size=2, warmup_steps=1)
    train(posts, preset=TINY, out_dir=tmp_path / "run", config=dataclasses.replace(config, max_steps=1),
          cache_dir=tmp_path / "cache")
    train(posts, preset=TINY, out_dir=tmp_path / "run", config=config, cache_dir=tmp_path / "cache", resume=tmp_path / "run")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["lm_dtype"] == "bfloat16"
    assert timings.calls == 1  # the resumed call did not time again


def test_a_finished_run_fits_its_ood_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.factory import load_model
    from model.guidance.confidence import BASE_INPUTS
    from model.training import fit_ood

    posts = load_posts(write_dataset(tmp_path / "d", users=3, posts_per_user=10, seed=5))

    def own_texts(model, split: Split, limit: int) -> list:  # a tiny model's captions are never right: calibrate on known ones
        return [[(s.text, -0.5), ("a plate of soup", -1.5)] for s in split.samples[:limit]]

    monkeypatch.setattr(fit_ood, "decode_nbest", own_texts)
    train(posts, preset=TINY, out_dir=tmp_path / "ckpt", config=TrainConfig(epochs=1, batch_size=8), cache_dir=tmp_path / "cache")
    guard = load_model(None, checkpoint=tmp_path / "ckpt", device="cpu").guidance.ood
    assert guard is not None and guard.confidence.inputs == BASE_INPUTS  # a run keeps no scene reader
    assert guard.policy.max_ood_score > 0 and guard.policy.min_confidence == 0.5
