"""Guarded image loading from an http(s) URL, base64 bytes, or a path under a root.

Image references come from strangers, so each source is fenced:
- URLs, time and sizes: the guards of model/image_guards.py (scheme and address
  rules, pinned connections, one wall-clock budget, byte, rate and pixel limits),
  which `uapt data import` shares; here they raise the worker's dead-letter errors.
- Base64: the byte limit before decoding.
- Paths: resolved with realpath and required to stay under the configured
  root, so neither ``..`` nor a symlink can escape it.
The limits are an `ImagePolicy` (model/image_policy.py, the one owner of their defaults).
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path

from PIL import Image

from model import image_guards
from model.image_policy import ImagePolicy
from worker.reasons import Reason
from worker.schemas import EventError, ImageRef


class ImageError(EventError):
    """The image could not be fetched or decoded."""

    reason = Reason.IMAGE_INVALID


class ImageRefused(ImageError):
    """The image reference breaks a guard (scheme, address, path, size); nothing was fetched."""

    reason = Reason.IMAGE_REFUSED


class ImageFetchError(ImageError):
    """The image server could not be reached or answered badly."""

    reason = Reason.IMAGE_FETCH


class ImageDecodeError(ImageError):
    """The bytes are not a complete, decodable image."""

    reason = Reason.IMAGE_DECODE


EVENT_ERRORS = image_guards.GuardErrors(ImageRefused, ImageFetchError, ImageDecodeError)


class ImageLoader(image_guards.GuardedFetcher):
    """Loads `ImageRef`s into RGB PIL images under an `ImagePolicy`; the URL guards are model/image_guards.py's."""

    errors = EVENT_ERRORS

    def __init__(self, policy: ImagePolicy) -> None:
        super().__init__(policy)
        self._root = Path(os.path.realpath(policy.root)) if policy.root is not None else None

    def load(self, ref: ImageRef, *, deadline: float | None = None) -> Image.Image:
        """Load one image; a URL fetch ends by ``deadline`` (time.monotonic()) or its own budget, if sooner."""
        if ref.b64 is not None:
            return self.decode(self._decode_b64(ref.b64))
        if ref.path is not None:
            return self.decode(self._read_path(ref.path))
        return self.decode(self.fetch_url(ref.url or "", deadline=deadline))

    def _decode_b64(self, text: str) -> bytes:
        if len(text) * 3 // 4 > self.policy.max_bytes:
            raise ImageRefused(f"base64 image is over the {self.policy.max_bytes}-byte limit")
        try:
            return base64.b64decode("".join(text.split()), validate=True)  # MIME-style line breaks are fine
        except (binascii.Error, ValueError) as exc:
            raise ImageDecodeError(f"image.b64 is not valid base64: {exc}") from None

    def _read_path(self, relative: str) -> bytes:
        if self._root is None:
            raise ImageRefused("image.path is not accepted: the worker has no image root configured")
        if "\0" in relative:  # the OS cannot name such a file (os.path.realpath would raise ValueError)
            raise ImageRefused("image.path contains a NUL character")
        resolved = Path(os.path.realpath(self._root / relative))
        if resolved != self._root and self._root not in resolved.parents:
            raise ImageRefused(f"image.path {relative!r} resolves outside the image root")
        try:
            with open(resolved, "rb") as handle:
                data = handle.read(self.policy.max_bytes + 1)
        except OSError as exc:
            raise ImageFetchError(f"image.path {relative!r} cannot be read: {exc.strerror}") from None
        if len(data) > self.policy.max_bytes:
            raise ImageRefused(f"image.path {relative!r} is over the {self.policy.max_bytes}-byte limit")
        return data


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """`model.image_guards.decode_image`, raising the worker's event errors."""
    return image_guards.decode_image(data, max_pixels, EVENT_ERRORS)
