"""The scene reader: its words, fit, threshold, storage, and the constraint it puts on generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.checkpoint import copy_checkpoint, save_checkpoint
from model.config import DecodingOptions
from model.factory import load_model
from model.guidance.scene_reader import (
    META_FILE,
    TENSORS_FILE,
    SceneReaderError,
    SceneReaderFit,
    load_scene_reader,
    save_scene_reader,
)
from model.training.fit_scene_reader import fit_scene_reader, scene_words
from model_fixtures import SAMPLE_KEYWORDS, sample_images, tiny_model

DIM = 16
SCENES = ("beach", "snow", "city")


def _toy_data(count: int, seed: int) -> tuple[torch.Tensor, list[str], list[str]]:
    """Images whose features 0..2 say which scene they show; captions name it in two users' words, or not at all."""
    generator = torch.Generator().manual_seed(seed)
    features = 0.3 * torch.randn(count, 4, DIM, generator=generator)
    scenes, captions = [], []
    words = {"beach": ("beach", "shore"), "snow": ("snow", "winter"), "city": ("city", "town")}
    for i in range(count):
        scene = SCENES[i % 3]
        features[i, :, SCENES.index(scene)] += 1.0
        scenes.append(scene)
        captions.append(["my dog", f"my dog at the {words[scene][0]}", f"a {words[scene][1]} day"][(i // 3) % 3])
    return features, scenes, captions


@pytest.fixture(scope="module")
def fitted():
    features, scenes, captions = _toy_data(300, seed=0)
    fit = SceneReaderFit(bands=1, min_count=5, steps=200, min_confidence=0.6)
    val_features, val_scenes, _ = _toy_data(90, seed=1)
    reader, figures = fit_scene_reader(features, scenes, captions, tiny_model().tokenizer, fit, val=(val_features, val_scenes))
    return reader, figures, fit


def test_a_word_names_a_scene_when_the_captions_using_it_mostly_show_that_scene() -> None:
    captions = ["at the shore", "the shore again", "shore", "my dog", "my dog", "my dog at the shore"]
    scenes = ["beach", "beach", "beach", "beach", "snow", "snow"]
    # "shore": 3 of 4 captions show a beach; "dog": 1 of 3 a beach, 2 of 3 snow
    assert scene_words(captions, scenes, min_count=3, purity=0.7) == {"beach": ["shore"], "snow": []}
    assert scene_words(captions, scenes, min_count=3, purity=0.8) == {"beach": [], "snow": []}
    assert scene_words(captions, scenes, min_count=5, purity=0.5) == {"beach": [], "snow": []}


def test_the_reader_learns_the_scene_and_each_users_words_for_it(fitted) -> None:
    reader, figures, _ = fitted
    assert reader.scenes == sorted(SCENES)
    assert reader.words == [["beach", "shore"], ["city", "town"], ["snow", "winter"]]
    assert figures["val_accuracy"] > 0.95 and figures["val_at_0.6"]["coverage"] > 0.9
    tokenizer = tiny_model().tokenizer
    beach_ids = set(reader.token_ids[reader.scenes.index("beach")])
    assert set(tokenizer(" shore").input_ids) <= beach_ids and set(tokenizer(" beach").input_ids) <= beach_ids


def test_required_ids_are_the_sure_scenes_tokens_and_none_where_unsure(fitted) -> None:
    reader, _, _ = fitted
    features, scenes, _ = _toy_data(6, seed=2)
    unsure = torch.zeros(1, 4, DIM)  # no scene feature at all: the read-out spreads its probability
    required = reader.required_ids(torch.cat([features, unsure]))
    assert required[:6] == [reader.token_ids[reader.scenes.index(s)] for s in scenes]
    reader.min_confidence = 1.0
    assert reader.required_ids(features) == [[]] * 6
    reader.min_confidence = 0.6


def test_save_and_load_round_trip_and_refuse_damage(fitted, tmp_path: Path) -> None:
    reader, figures, fit = fitted
    vocab = tiny_model().lm.get_input_embeddings().num_embeddings
    assert load_scene_reader(tmp_path, DIM, vocab) is None  # no reader is not an error
    save_scene_reader(reader, tmp_path, fit, figures)
    loaded = load_scene_reader(tmp_path, DIM, vocab)
    features, _, _ = _toy_data(6, seed=3)
    assert loaded.words == reader.words and loaded.min_confidence == 0.6
    assert loaded.required_ids(features) == reader.required_ids(features)
    with pytest.raises(SceneReaderError, match="image features"):
        load_scene_reader(tmp_path, DIM + 1, vocab)
    with pytest.raises(SceneReaderError, match="vocabulary"):
        load_scene_reader(tmp_path, DIM, 10)
    meta = json.loads((tmp_path / META_FILE).read_text())
    (tmp_path / META_FILE).write_text(json.dumps({**meta, "min_confidence": 1.5}))
    with pytest.raises(SceneReaderError, match="min_confidence"):
        load_scene_reader(tmp_path, DIM, vocab)
    (tmp_path / META_FILE).write_text(json.dumps({k: v for k, v in meta.items() if k != "scenes"}))
    with pytest.raises(SceneReaderError, match="do not describe a scene reader"):
        load_scene_reader(tmp_path, DIM, vocab)
    (tmp_path / META_FILE).write_text("[]")  # JSON, but not a description
    with pytest.raises(SceneReaderError, match="not in format"):
        load_scene_reader(tmp_path, DIM, vocab)
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    (tmp_path / TENSORS_FILE).write_bytes((tmp_path / TENSORS_FILE).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(SceneReaderError, match="checksum"):
        load_scene_reader(tmp_path, DIM, vocab)


def test_fit_refuses_a_scene_no_caption_word_names() -> None:
    features, scenes, captions = _toy_data(60, seed=0)
    captions = [c if s != "city" else "my dog" for c, s in zip(captions, scenes)]
    with pytest.raises(SceneReaderError, match="'city'"):
        fit_scene_reader(features, scenes, captions, tiny_model().tokenizer, SceneReaderFit(bands=1, min_count=5, steps=5))


@pytest.mark.parametrize(
    "fields, message",
    [({"purity": 0.5}, "purity"), ({"min_confidence": -0.1}, "min_confidence"), ({"bands": 0}, "bands")],
)
def test_fit_settings_are_checked(fields: dict, message: str) -> None:
    with pytest.raises(SceneReaderError, match=message):
        SceneReaderFit(**fields)


@pytest.fixture(scope="module")
def reader_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint whose reader is sure of every image's scene, which captions name with rare tokens."""
    model = tiny_model()
    path = save_checkpoint(model, tmp_path_factory.mktemp("scene") / "ckpt")
    images = model.encode_images(sample_images(3) * 20)
    scenes = ["beach", "snow", "city"] * 20
    captions = [f"at the {scene}" for scene in scenes]
    fit = SceneReaderFit(bands=1, min_count=5, steps=300, min_confidence=0.0)
    reader, figures = fit_scene_reader(images, scenes, captions, model.tokenizer, fit)
    save_scene_reader(reader, path, fit, figures)
    return path


def _captions(model, **kwargs) -> list[list[str]]:
    images = model.encode_images(sample_images(3))
    context = model.encode_context([" ".join(k) for k in SAMPLE_KEYWORDS[:3]])
    return [[c.text for c in image] for image in model.generate(images, context, DecodingOptions(max_new_tokens=8, **kwargs))]


def test_generate_puts_the_sure_scenes_word_in_the_best_caption(reader_checkpoint: Path, tmp_path: Path) -> None:
    plain = tiny_model()
    constrained = load_model("tiny", device="cpu", checkpoint=reader_checkpoint)
    assert plain.guidance.scene_reader is None and constrained.guidance.scene_reader is not None
    best = [image[0] for image in _captions(constrained)]
    for caption, scene in zip(best, ["beach", "snow", "city"]):
        assert scene in caption.lower()
    assert not any(scene in image[0].lower() for image, scene in zip(_captions(plain), ["beach", "snow", "city"]))
    assert _captions(constrained, scene_constraint=False) == _captions(plain)  # off: plain beam search
    assert _captions(constrained, num_beams=1) == _captions(plain, num_beams=1)  # greedy has no constraint
    copied = load_model("tiny", device="cpu", checkpoint=copy_checkpoint(reader_checkpoint, tmp_path / "copy", dtype=torch.float32))
    assert _captions(copied) == _captions(constrained)


def test_the_captioner_applies_the_constraint_unless_told_not_to(reader_checkpoint: Path) -> None:
    from model.captioner import Captioner

    model = load_model("tiny", device="cpu", checkpoint=reader_checkpoint)
    images, keywords = sample_images(3), [list(k) for k in SAMPLE_KEYWORDS[:3]]
    constrained = Captioner(model, DecodingOptions(max_new_tokens=8)).caption(images, keywords)
    free = Captioner(model, DecodingOptions(max_new_tokens=8, scene_constraint=False)).caption(images, keywords)
    plain = Captioner(tiny_model(), DecodingOptions(max_new_tokens=8)).caption(images, keywords)
    assert [[c.text for c in image] for image in free] == [[c.text for c in image] for image in plain]
    for image, scene in zip(constrained, ["beach", "snow", "city"]):
        assert scene in image[0].text.lower()
