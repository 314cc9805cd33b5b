"""The worker's processing step, free of Kafka: a batch of records in, messages and posts out.

`Processor.process_batch` does steps 1-4 of DESIGN.md section 2 (parse, load
images, read keywords, caption) and builds what steps 5-6 need (caption and
dead-letter messages, posts to fold). It reads the profile store but never
writes it: the loop folds the posts only after the outputs are flushed, so the
profile read here never contains the batch's own text.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from PIL import Image

from profiles import Keyword, Post
from worker.dlq import DeadLetter, dead_letter
from worker.images import ImageLoader
from worker.schemas import CaptionEvent, CaptionOut, EventError, ImageRef, PostEvent, parse_post
from worker.stages import Stage, timed

log = logging.getLogger(__name__)

IMAGE_THREADS = 8  # concurrent image loads per batch (URL fetches are network-bound)


class Record(Protocol):
    """What processing needs of a consumed message (kafka-python's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True)
class InputRecord:
    """A plain Record, for tests and tools that have no broker."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp: int = field(default_factory=lambda: int(time.time() * 1000))


class CaptionerLike(Protocol):
    model_id: str

    def caption(self, images: Sequence[Image.Image], keywords: Sequence[Sequence[str]], num_captions: int = 3) -> list: ...


class KeywordSource(Protocol):
    def top_keywords(self, user_ids: Sequence[str], k: int) -> dict[str, list[Keyword]]: ...


class ModelError(EventError):
    """The model failed on this post alone (while the others of its batch were captioned)."""

    reason = "model_error"


@dataclass(frozen=True)
class OutputMessage:
    """One caption message for the output topic."""

    key: bytes
    value: bytes
    post_id: str
    event_timestamp_ms: int


@dataclass
class BatchResult:
    outputs: list[OutputMessage] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)  # to fold after the outputs are flushed
    failures: Counter[str] = field(default_factory=Counter)  # reason -> count
    stage_seconds: dict[Stage, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Accepted:
    record: Record
    event: PostEvent
    image: Image.Image


class Processor:
    """Turns a batch of input records into a BatchResult with one keyword read and one caption call."""

    def __init__(
        self,
        captioner: CaptionerLike,
        keywords: KeywordSource,
        loader: ImageLoader,
        *,
        num_captions: int = 3,
        max_captions: int = 5,
        top_k: int = 5,
    ) -> None:
        self.captioner = captioner
        self.keywords = keywords
        self.loader = loader
        self.num_captions = num_captions
        self.max_captions = max_captions
        self.top_k = top_k

    def process_batch(self, records: Sequence[Record]) -> BatchResult:
        result = BatchResult()

        parsed: list[tuple[Record, PostEvent]] = []
        with timed(result.stage_seconds, Stage.PARSE):
            for record in records:
                try:
                    parsed.append((record, parse_post(record.value)))
                except EventError as exc:
                    self._refuse(result, record, exc)

        accepted: list[_Accepted] = []
        with timed(result.stage_seconds, Stage.IMAGE):
            for (record, event), outcome in zip(parsed, self._load_images([e.image for _, e in parsed]), strict=True):
                if isinstance(outcome, EventError):
                    self._refuse(result, record, outcome)
                else:
                    accepted.append(_Accepted(record, event, outcome))
        if not accepted:
            return result

        with timed(result.stage_seconds, Stage.PROFILE_READ):
            user_ids = sorted({a.event.user_id for a in accepted})
            profiles = self.keywords.top_keywords(user_ids, self.top_k)

        keyword_terms = [[kw.term for kw in profiles.get(a.event.user_id, [])] for a in accepted]
        wanted = [min(a.event.num_captions or self.num_captions, self.max_captions) for a in accepted]
        with timed(result.stage_seconds, Stage.GENERATE):
            captions = self._caption(accepted, keyword_terms, max(wanted), result)

        now_ms = time.time() * 1000
        folded: set[str] = set()
        for item, terms, n, suggestions in zip(accepted, keyword_terms, wanted, captions, strict=True):
            if suggestions is None:  # this post broke the model; it is in the dead letters
                continue
            event = item.event
            message = CaptionEvent(
                post_id=event.post_id,
                user_id=event.user_id,
                captions=[CaptionOut(text=c.text, score=float(c.score)) for c in suggestions[:n]],
                keywords=terms,
                model=self.captioner.model_id,
                latency_ms=round(max(0.0, now_ms - item.record.timestamp), 1),
            )
            result.outputs.append(
                OutputMessage(event.user_id.encode("utf-8"), message.to_bytes(), event.post_id, item.record.timestamp)
            )
            if event.text and event.post_id not in folded:  # a replayed post may repeat in one batch
                folded.add(event.post_id)
                result.posts.append(Post(post_id=event.post_id, user_id=event.user_id, text=event.text))
        return result

    def _load_images(self, refs: Sequence[ImageRef]) -> list[Image.Image | EventError]:
        """Load all images of the batch at once: URL fetches wait on the network, not on each other."""
        if not refs:
            return []

        def load(ref: ImageRef) -> Image.Image | EventError:
            try:
                return self.loader.load(ref)
            except EventError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(IMAGE_THREADS, len(refs)), thread_name_prefix="uapt-image") as pool:
            return list(pool.map(load, refs))

    def _caption(self, accepted: Sequence[_Accepted], keyword_terms, num_captions: int, result: BatchResult) -> list:
        """One batched model call; if it fails, caption each post alone so one bad post cannot block the stream.

        Posts that still fail alone go to the dead letters. If every post fails alone (or the
        batch holds one post), the fault is the model's, not the data's: it is re-raised, the
        loop stops without committing, and the batch is replayed after a restart.
        """
        try:
            return self.captioner.caption([a.image for a in accepted], keyword_terms, num_captions=num_captions)
        except Exception:
            if len(accepted) == 1:
                raise
            log.exception("batched captioning of %d posts failed; retrying them one by one", len(accepted))
        alone: list = []
        errors: list[Exception] = []
        for item, terms in zip(accepted, keyword_terms, strict=True):
            try:
                alone.append(self.captioner.caption([item.image], [terms], num_captions=num_captions)[0])
            except Exception as exc:  # noqa: BLE001 (sorted below: data fault or model fault)
                alone.append(None)
                errors.append(exc)
                self._refuse(result, item.record, ModelError(f"captioning this post failed: {type(exc).__name__}: {exc}"))
        if len(errors) == len(accepted):
            raise errors[0]
        return alone

    @staticmethod
    def _refuse(result: BatchResult, record: Record, error: EventError) -> None:
        result.dead_letters.append(dead_letter(record, error, error.reason))
        result.failures[error.reason] += 1
