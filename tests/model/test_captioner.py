"""`Captioner`: what the worker calls, on the tiny preset."""

from __future__ import annotations

import pytest
import torch

from model.captioner import Captioner
from model.config import DecodingOptions
from model.keywords import keywords_to_text
from model.uapt import InputError
from model_fixtures import sample_images, tiny_model


def test_each_distinct_user_context_is_encoded_once_and_lands_on_its_own_images(monkeypatch) -> None:
    model = tiny_model()
    keywords = [["beach", "sunset"], ["coffee"], ["beach", "sunset"], [], ["coffee"]]
    encoded: list[list[str]] = []
    real_encode = model.encode_context

    def counting_encode(texts):
        encoded.append(list(texts))
        return real_encode(texts)

    seen: dict[str, torch.Tensor] = {}

    def capture_generate(image_features, context_features, decoding):
        seen["context"] = context_features
        seen["decoding"] = decoding
        return [[] for _ in range(image_features.size(0))]

    monkeypatch.setattr(model, "encode_context", counting_encode)
    monkeypatch.setattr(model, "generate", capture_generate)
    Captioner(model).caption(sample_images(5), keywords)

    assert encoded == [["beach sunset", "coffee", ""]]
    expected = real_encode([keywords_to_text(words) for words in keywords])
    assert torch.allclose(seen["context"], expected, atol=1e-6)
    assert seen["decoding"] == DecodingOptions(num_return_sequences=3)  # the paper's beam 3, three captions
    Captioner(model, DecodingOptions(num_beams=2, temperature=1.1)).caption(sample_images(1), [[]], num_captions=4)
    assert seen["decoding"] == DecodingOptions(num_beams=4, temperature=1.1, num_return_sequences=4)  # widened to the n-best


def test_mismatched_keywords_are_refused() -> None:
    with pytest.raises(InputError, match="2 entries for 3 images"):
        Captioner(tiny_model()).caption(sample_images(3), [["a"], ["b"]])


def test_images_encoded_ahead_caption_like_the_images_themselves() -> None:
    """The worker encodes a batch's images while the batch before generates, then captions any subset of them."""
    captioner = Captioner(tiny_model(), DecodingOptions(max_new_tokens=4))
    images, keywords = sample_images(3), [["beach"], [], ["coffee", "latte"]]
    features = captioner.encode_images(images)
    assert len(features) == 3 and features[0].dim() == 2  # one (T, image_dim) tensor per image

    direct = captioner.caption(images, keywords, num_captions=2)
    ahead = captioner.caption_encoded(features, keywords, num_captions=2)
    subset = captioner.caption_encoded(features[1:], keywords[1:], num_captions=2)
    assert [[c.text for c in row] for row in ahead] == [[c.text for c in row] for row in direct]
    assert [[c.text for c in row] for row in subset] == [[c.text for c in row] for row in direct[1:]]
    assert captioner.encode_images([]) == [] and captioner.caption_encoded([], []) == []
