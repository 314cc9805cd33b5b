"""Helpers for the worker tests: sample images (good, truncated, bomb), a fake captioner,
reading a topic, running a worker in a thread."""

from __future__ import annotations

import io
import json
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image

from model.guidance.abstention import Judgement
from worker.events import post_event
from worker.kafka_io import make_producer
from worker.kafka_security import KafkaSecurity

PLAINTEXT = KafkaSecurity()  # the embedded broker's; tests of a secured broker pass their own


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
    """Captions that echo the image colour and keywords, and records every call.

    Its image "features" are the images themselves, so subclasses that override `caption` see every model call.
    """

    model_id = "fake:untrained"
    serving_dtype = "float32"

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[list[str]], int]] = []

    def encode_images(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        return list(images)

    def caption_encoded(self, image_features: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3):
        return self.caption(image_features, keywords, num_captions)

    def judge(self, image_features: Sequence[Image.Image], captions: Sequence[Sequence[FakeCaption]]) -> list[Judgement]:
        return [Judgement(None, None) for _ in captions]  # no OOD file: nothing scored, nothing abstained

    def caption(self, images: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3):
        self.calls.append((len(images), [list(k) for k in keywords], num_captions))
        return [
            [
                FakeCaption(f"rgb{image.getpixel((0, 0))} {' '.join(kws)} #{i}".strip(), -float(i), [i])
                for i in range(num_captions)
            ]
            for image, kws in zip(images, keywords, strict=True)
        ]


def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: Callable[[list], bool],
    timeout_s: float = 60.0,
    security: KafkaSecurity = PLAINTEXT,
) -> list:
    """All records of ``topic`` from the beginning, read until ``until(records)`` holds (or timeout)."""
    from worker.kafka_io import make_consumer

    consumer = make_consumer(bootstrap, None, security=security)
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


def worker_command(settings) -> list[str]:
    """`uapt worker` flags reproducing ``settings`` (the fields the tests set)."""
    flags = {
        "bootstrap-servers": settings.bootstrap_servers,
        "input-topic": settings.input_topic,
        "output-topic": settings.output_topic,
        "dlq-topic": settings.dlq_topic,
        "group-id": settings.group_id,
        "database-url": settings.database_url,
        "preset": settings.preset,
        "device": "cpu",
        "metrics-port": str(settings.metrics_port),
        "batch-size": str(settings.batch_size),
        "linger-ms": str(settings.linger_ms),
        "num-captions": str(settings.num_captions),
    }
    command = [sys.executable, "-m", "cli.main", "worker", "--no-create-topics"]
    for name, value in flags.items():
        command += [f"--{name}", value]
    return command


def start_worker_process(settings, log_path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(worker_command(settings), stdout=log, stderr=subprocess.STDOUT)


def wait_ready(port: int, timeout_s: float = 90.0, process: subprocess.Popen | None = None) -> None:
    """Poll /readyz until it answers 200 (model loaded, partitions assigned)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"worker exited early with code {process.returncode}")
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker on port {port} never became ready")


def publish(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes | None]],
    security: KafkaSecurity = PLAINTEXT,
) -> list:
    """Send (key, value) pairs; returns each one's RecordMetadata (partition, offset)."""
    producer = make_producer(bootstrap, security=security)
    futures = [producer.send(topic, key=key, value=value) for key, value in messages]
    producer.flush()
    metadata = [future.get(timeout=30) for future in futures]
    producer.close()
    return metadata


def good_posts(n: int, users: int = 3, prefix: str = "p") -> list[tuple[bytes, bytes]]:
    words = ["beach sunset", "coffee latte art", "mountain hike trail", "city night lights"]
    return [
        (
            f"user{i % users}".encode(),
            post_event(f"{prefix}{i}", f"user{i % users}", image_bytes=png_bytes((i * 9 % 256, 40, 90)), text=words[i % users % len(words)]),
        )
        for i in range(n)
    ]


def captions_by_post(records) -> dict[str, list[dict]]:
    by_post: dict[str, list[dict]] = {}
    for record in records:
        message = json.loads(record.value)
        by_post.setdefault(message["post_id"], []).append(message)
    return by_post


# --- a slow-loris HTTP server -------------------------------------------------------------

DRIP_S = 0.1  # one byte per DRIP_S: every single read is fast, the whole never ends
SLOW_MODES = ("stall", "header-trickle", "body-trickle", "endless")


def _serve_slowly(conn: socket.socket, mode: str, image: bytes) -> None:
    """Answer one request in ``mode``; returns once the client hangs up."""
    try:
        request = b""
        while b"\r\n\r\n" not in request:
            part = conn.recv(4096)
            if not part:
                return
            request += part
        if mode == "stall":  # accept the request, never answer
            conn.recv(1)
        elif mode == "header-trickle":
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while True:
                conn.sendall(b"X")
                time.sleep(DRIP_S)
        elif mode == "body-trickle":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n")
            while True:
                conn.sendall(b"\0")
                time.sleep(DRIP_S)
        elif mode == "endless":  # as fast as the client takes it, no length
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
            while True:
                conn.sendall(b"\0" * 65536)
        elif mode == "image":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(image) + image)
    except OSError:  # the client gave up: that is the point
        pass
    finally:
        conn.close()


@contextmanager
def slow_http_server() -> Iterator[str]:
    """A raw TCP server on 127.0.0.1 whose first path segment picks its pace (SLOW_MODES, or "image"
    for a 60 KB PNG at full speed); yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    image = png_bytes((3, 4, 5)) + b"\0" * 60_000  # trailing bytes keep a PNG decodable and make it 60 KB
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            head = conn.recv(4096, socket.MSG_PEEK).split(b" ", 2)
            mode = head[1].decode().strip("/").split("/")[0] if len(head) > 1 else "stall"
            threading.Thread(target=_serve_slowly, args=(conn, mode, image), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stopping.set()
        thread.join()
        listener.close()
