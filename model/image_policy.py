"""The image guards' limits, apart from the guards (model/image_guards.py) so that reading
settings imports neither Pillow nor the HTTP stack."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImagePolicy:
    """The image guards' limits; the worker's settings and `uapt data import` fill them; tests build one directly."""

    root: Path | None = None  # the worker's image.path root (worker/images.py)
    allow: tuple[str, ...] = ()
    max_bytes: int = 10_000_000
    max_bytes_per_s: int = 4_000_000  # per download: a fast server cannot flood the network
    max_pixels: int = 40_000_000
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 10.0
    max_redirects: int = 3
