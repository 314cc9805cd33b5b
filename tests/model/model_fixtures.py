"""Cached tiny models and sample inputs for the model tests.

Loaded once per test session through `functools.cache` (a fixture imported into
several test modules would otherwise be built once per module).
"""

from __future__ import annotations

import functools

from PIL import Image

from model.factory import load_model

from model.uapt import UAPT


@functools.cache
def tiny_model(ablation: str | None = None) -> UAPT:
    """A shared tiny model; tests must not train or otherwise change it."""
    return load_model("tiny", device="cpu", ablation=ablation)


def sample_images(count: int) -> list[Image.Image]:
    """Distinct small images of different sizes and colours."""
    return [
        Image.new("RGB", (24 + 7 * i, 40 - 3 * i), ((53 * i) % 256, (97 * i + 40) % 256, (31 * i + 200) % 256))
        for i in range(count)
    ]


SAMPLE_KEYWORDS = [["beach", "sunset"], [], ["coffee", "latte", "morning"], ["dog"], ["city", "night"], ["cake"]]
