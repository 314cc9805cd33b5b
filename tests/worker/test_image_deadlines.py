"""Image fetches against a real slow-loris server on 127.0.0.1: the budget holds whatever the server's pace."""

import threading
import time
from collections.abc import Iterator

import pytest
from worker_samples import SLOW_MODES, FakeCaptioner, png_bytes, slow_http_server

from worker import processing
from worker.events import post_event
from worker.images import ImageFetchError, ImageLoader
from worker.processing import InputRecord, Processor
from worker.schemas import ImageRef
from worker.settings import ImagePolicy

BUDGET_S = 1.0
SLACK_S = 0.6  # thread start-up and a loaded 2-core CI machine


@pytest.fixture(scope="module")
def slow_server() -> Iterator[str]:
    with slow_http_server() as base:
        yield base


def loader(**policy) -> ImageLoader:
    return ImageLoader(ImagePolicy(allow=("127.0.0.0/8",), read_timeout_s=BUDGET_S, **policy))


@pytest.mark.parametrize("mode", SLOW_MODES)
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
    modes = list(SLOW_MODES) * 6
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


class StuckLoader(ImageLoader):
    """A load that ignores its deadline, like a name lookup that never answers."""

    def __init__(self, policy: ImagePolicy) -> None:
        super().__init__(policy)
        self.release = threading.Event()

    def load(self, ref, *, deadline=None):
        if ref.url:
            self.release.wait(30)
        return super().load(ref, deadline=deadline)


def test_a_load_that_cannot_be_cut_still_cannot_hold_the_batch(store):
    stuck = StuckLoader(ImagePolicy(read_timeout_s=0.5))
    records = [
        InputRecord("posts", 0, 0, post_event("stuck", "u", image_url="http://example.com/a.png")),
        InputRecord("posts", 0, 1, post_event("good", "u", image_bytes=png_bytes())),
    ]
    start = time.monotonic()
    try:
        result = Processor(FakeCaptioner(), store, stuck).process_batch(records)
    finally:
        stuck.release.set()
    assert time.monotonic() - start < 0.5 + processing.LATE_GRACE_S + SLACK_S + 1.0
    assert [o.post_id for o in result.outputs] == ["good"] and result.failures == {"image_fetch": 1}
