"""Helpers for the worker tests: sample images (good, truncated, bomb), a fake captioner,
reading a topic, running a worker in a thread."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (32, 32)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb if decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * (width + 1) * 64, 9)  # 64 zero rows; the rest would inflate on decode
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


@dataclass
class FakeCaption:
    text: str
    score: float
    token_ids: list[int]


class FakeCaptioner:
    """Captions that echo the image colour and keywords, and records every call."""

    model_id = "fake:untrained"

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[list[str]], int]] = []

    def caption(self, images: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3):
        self.calls.append((len(images), [list(k) for k in keywords], num_captions))
        return [
            [
                FakeCaption(f"rgb{image.getpixel((0, 0))} {' '.join(kws)} #{i}".strip(), -float(i), [i])
                for i in range(num_captions)
            ]
            for image, kws in zip(images, keywords, strict=True)
        ]


def read_topic(bootstrap: str, topic: str, *, until: Callable[[list], bool], timeout_s: float = 60.0) -> list:
    """All records of ``topic`` from the beginning, read until ``until(records)`` holds (or timeout)."""
    from worker.kafka_io import make_consumer

    consumer = make_consumer(bootstrap, None)
    consumer.subscribe([topic])
    records: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while not until(records) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@contextmanager
def running_worker(settings, captioner) -> Iterator[dict]:
    """Run `run_worker` in a thread; yields {'port': metrics port}; stops it cleanly on exit."""
    from worker.service import run_worker

    stop, ready, info = threading.Event(), threading.Event(), {}

    def on_ready(server) -> None:
        info["port"] = server.port if server else None
        ready.set()

    def target() -> None:
        info["exit_code"] = run_worker(settings, captioner=captioner, stop=stop, on_ready=on_ready)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert ready.wait(60), "worker did not start"
    try:
        yield info
    finally:
        stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "worker did not stop"
    assert info["exit_code"] == 0
