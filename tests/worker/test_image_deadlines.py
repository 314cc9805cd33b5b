"""Image fetches against a real slow-loris server on 127.0.0.1: the budget holds whatever the server's pace."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from worker_samples import FakeCaptioner, png_bytes

from worker.events import post_event
from worker.images import ImageFetchError, ImageLoader
from worker.processing import InputRecord, Processor
from worker.schemas import ImageRef
from worker.settings import ImagePolicy

BUDGET_S = 1.0
SLACK_S = 0.6  # thread start-up and a loaded 2-core CI machine
DRIP_S = 0.1  # one byte per DRIP_S: every single read is fast, the whole never ends


def _serve(conn: socket.socket, mode: str, image: bytes) -> None:
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


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    """A raw TCP server whose first path segment picks its behaviour; yields its base URL."""
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
            threading.Thread(target=_serve, args=(conn, mode, image), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stopping.set()
    thread.join()
    listener.close()


def loader(**policy) -> ImageLoader:
    return ImageLoader(ImagePolicy(allow=("127.0.0.0/8",), read_timeout_s=BUDGET_S, **policy))


@pytest.mark.parametrize("mode", ["stall", "header-trickle", "body-trickle", "endless"])
def test_a_slow_server_cannot_outlast_the_budget(slow_server, mode):
    start = time.monotonic()
    with pytest.raises(ImageFetchError, match="budget"):
        loader().load(ImageRef(url=f"{slow_server}/{mode}"))
    assert time.monotonic() - start < BUDGET_S + SLACK_S


def test_the_rate_cap_slows_a_fast_server_down(slow_server):
    start = time.monotonic()
    image = loader(max_bytes_per_s=100_000).load(ImageRef(url=f"{slow_server}/image"))
    assert image.getpixel((0, 0)) == (3, 4, 5)
    assert time.monotonic() - start >= 0.5  # 60 KB at 100 KB/s; uncapped it takes milliseconds


def test_an_image_too_large_for_the_rate_cap_and_budget_is_refused_in_time(slow_server):
    start = time.monotonic()
    with pytest.raises(ImageFetchError, match="budget"):
        loader(max_bytes_per_s=20_000).load(ImageRef(url=f"{slow_server}/image"))
    assert time.monotonic() - start < BUDGET_S + SLACK_S


def test_many_slow_urls_in_one_batch_cost_one_budget(slow_server, store):
    modes = ["stall", "header-trickle", "body-trickle", "endless"] * 6
    records = [
        InputRecord("posts", 0, i, post_event(f"slow{i}", "u", image_url=f"{slow_server}/{mode}/{i}"))
        for i, mode in enumerate(modes)
    ]
    records.append(InputRecord("posts", 0, len(modes), post_event("good", "u", image_bytes=png_bytes((7, 7, 7)))))
    processor = Processor(FakeCaptioner(), store, loader())

    start = time.monotonic()
    result = processor.process_batch(records)
    assert time.monotonic() - start < BUDGET_S + SLACK_S + 1.0  # + the fake model and SQLite read
    assert [o.post_id for o in result.outputs] == ["good"]
    assert result.failures == {"image_fetch": len(modes)}
