"""The worker's processing step, free of Kafka: a batch of records in, messages and posts out.

`Processor.process_batch` does steps 1-4 of the README's data-flow diagram (parse, load
images, read keywords, caption) and builds what steps 5-6 need (caption and
dead-letter messages, posts to fold, users to forget). It reads the profile
store but never writes it: the loop folds the posts only after the outputs are
flushed, so the profile read here never contains the batch's own text.

A post whose image is unlike the training images, or whose best caption is
unlikely to be right, is abstained (`model.guidance.abstention`): its caption
message says so, with the scores and no captions, and its text still folds.

It is two steps, so that the loop can overlap batches: `prepare` (parse, load
the images, run the frozen image encoder) needs nothing from the batches
before, and `finish` (read keywords, generate, build the messages) must start
after the batch before is folded, so that its profile read is the one a
one-batch-at-a-time worker would make.

A ``uapt.forget/1`` control event is not captioned: it becomes a `PendingForget`
placed among the batch's posts in record order, so the checkpoint folds the
user's earlier posts, erases the user, then folds the later ones (a fresh
profile). Posts after a forget in the same batch are captioned without
keywords, as a new user's would be. Its key must be the user_id, which puts it
on the partition of the user's posts and so in order with them.

No record can stop the stream: an error in a per-record step (parse, image,
output) dead-letters that record alone, and when the batch's keyword read or
model call fails, the batch is split in halves until the failing posts are
alone; each is tried ``max_attempts`` times, then dead-lettered. Only
`DatabaseUnavailable` (the store stopped waiting for its database) escapes:
an outage is not the data's fault, so nothing is dead-lettered for it.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Protocol

from PIL import Image

from model.guidance.abstention import Judgement
from profiles import Keyword, Post
from profiles.errors import DatabaseUnavailable
from worker.dlq import DeadLetter, dead_letter
from worker.images import ImageFetchError, ImageLoader
from worker.reasons import Reason
from worker.schemas import CaptionEvent, CaptionOut, EventError, ForgetEvent, ImageRef, PostEvent, parse_event
from worker.stages import Stage, timed

log = logging.getLogger(__name__)

MAX_IMAGE_THREADS = 64  # a batch's images load at once: slow URLs wait out one shared budget, not queue
LATE_GRACE_S = 2.0  # past the image budget, the batch waits this long for a load it cannot cut, then moves on


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
    """The model as the worker calls it: images encoded first (per image), captioned later (`model.captioner.Captioner`)."""

    model_id: str

    def encode_images(self, images: Sequence[Image.Image]) -> Sequence[object]: ...

    def caption_encoded(
        self, image_features: Sequence[object], keywords: Sequence[Sequence[str]], num_captions: int = 3
    ) -> list: ...

    def judge(self, image_features: Sequence[object], captions: Sequence[Sequence[object]]) -> list[Judgement]: ...


class KeywordSource(Protocol):
    def top_keywords(self, user_ids: Sequence[str], k: int) -> dict[str, list[Keyword]]: ...


class _BatchFailure(Exception):
    """A batch-level step (keyword read or model call) failed; ``reason`` labels it should a post be dead-lettered."""

    def __init__(self, reason: Reason, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.reason, self.cause = reason, cause


@dataclass(frozen=True)
class OutputMessage:
    """One caption message for the output topic."""

    key: bytes
    value: bytes
    post_id: str
    event_timestamp_ms: int


@dataclass(frozen=True)
class PendingForget:
    """Erase ``user_id`` once the first ``after_posts`` of the batch's posts are folded (they precede it)."""

    user_id: str
    after_posts: int


@dataclass
class BatchResult:
    outputs: list[OutputMessage] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    posts: list[Post] = field(default_factory=list)  # to fold after the outputs are flushed
    forgets: list[PendingForget] = field(default_factory=list)  # applied among the posts, in record order
    failures: Counter[Reason] = field(default_factory=Counter)  # reason -> count
    abstentions: Counter[str] = field(default_factory=Counter)  # abstention reason -> posts
    ood_scores: list[float] = field(default_factory=list)  # one per scored post
    confidences: list[float] = field(default_factory=list)  # each scored post's best caption's
    stage_seconds: dict[Stage, float] = field(default_factory=dict)


@dataclass(frozen=True)
class _Accepted:
    record: Record
    event: PostEvent
    image: Image.Image
    position: int  # in the batch
    fresh: bool  # its user was forgotten earlier in the batch: no keywords
    features: object | None = None  # from the image encoder; None: encoded with the model call


@dataclass
class PreparedBatch:
    """A batch after its per-record steps and image encoding; `Processor.finish` completes it."""

    result: BatchResult  # dead letters and stage times so far
    accepted: list[_Accepted]
    forgets: list[tuple[int, str]]  # (position in the batch, user_id)


@dataclass(frozen=True)
class _Refused:
    error: Exception
    reason: Reason


@dataclass(frozen=True)
class _Captioned:
    item: _Accepted
    keywords: list[str]
    wanted: int
    suggestions: list
    judgement: Judgement


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
        max_attempts: int = 3,
    ) -> None:
        self.captioner = captioner
        self.keywords = keywords
        self.loader = loader
        self.num_captions = num_captions
        self.max_captions = max_captions
        self.top_k = top_k
        self.max_attempts = max_attempts

    def process_batch(self, records: Sequence[Record]) -> BatchResult:
        return self.finish(self.prepare(records))

    def prepare(self, records: Sequence[Record]) -> PreparedBatch:
        """Parse, load the images, encode them: nothing here depends on the batches before."""
        result = BatchResult()

        parsed: list[tuple[int, Record, PostEvent]] = []
        forgets: list[tuple[int, str]] = []
        with timed(result.stage_seconds, Stage.PARSE):
            for position, record in enumerate(records):
                try:
                    event = parse_event(record.value)
                    if isinstance(event, ForgetEvent):
                        forgets.append((position, _forgotten_user(record, event)))
                    else:
                        parsed.append((position, record, event))
                except EventError as exc:
                    self._refuse(result, record, exc)
                except Exception as exc:  # noqa: BLE001 (contained: one record must not stop the stream)
                    log.exception("parsing the record at %s/%d@%d failed", record.topic, record.partition, record.offset)
                    self._refuse(result, record, exc, Reason.INTERNAL_ERROR)

        accepted: list[_Accepted] = []
        with timed(result.stage_seconds, Stage.IMAGE):
            images = self._load_images([e.image for _, _, e in parsed])
            for (position, record, event), outcome in zip(parsed, images, strict=True):
                if isinstance(outcome, _Refused):
                    self._refuse(result, record, outcome.error, outcome.reason)
                else:
                    fresh = any(at < position and user == event.user_id for at, user in forgets)
                    accepted.append(_Accepted(record, event, outcome, position, fresh))
        if accepted:
            with timed(result.stage_seconds, Stage.ENCODE):
                accepted = self._encoded(accepted)
        return PreparedBatch(result, accepted, forgets)

    def finish(self, prepared: PreparedBatch) -> BatchResult:
        """Read keywords, caption, build the messages; start it only once the batch before is folded."""
        result, accepted, forgets = prepared.result, prepared.accepted, prepared.forgets
        if not accepted:
            result.forgets = _placed(forgets, folded_positions=[])
            return result

        now_ms = time.time() * 1000
        folded: set[str] = set()
        folded_positions: list[int] = []  # of result.posts, ascending
        for done in self._isolated(accepted, result):
            try:
                output = self._output(done, now_ms)
            except Exception as exc:  # noqa: BLE001 (contained, as above)
                log.exception("building the caption message of post %r failed", done.item.event.post_id)
                self._refuse(result, done.item.record, exc, Reason.INTERNAL_ERROR)
                continue
            result.outputs.append(output)
            _count_judgement(result, done.judgement)
            event = done.item.event
            if event.text and event.post_id not in folded:  # a replayed post may repeat in one batch
                folded.add(event.post_id)
                result.posts.append(Post(post_id=event.post_id, user_id=event.user_id, text=event.text))
                folded_positions.append(done.item.position)
        result.forgets = _placed(forgets, folded_positions)
        return result

    def _encoded(self, accepted: list[_Accepted]) -> list[_Accepted]:
        """The posts with their image features; if the encoder fails on the batch, without them:
        each model call then encodes its own posts, where `_isolated` finds the image at fault."""
        try:
            features = self.captioner.encode_images([a.image for a in accepted])
            return [replace(a, features=f) for a, f in zip(accepted, features, strict=True)]
        except Exception:  # noqa: BLE001 (retried post by post in the model call)
            log.warning("encoding a batch of %d images failed; encoding them with the model calls", len(accepted), exc_info=True)
            return accepted

    def _load_images(self, refs: Sequence[ImageRef]) -> list[Image.Image | _Refused]:
        """Load all images of the batch at once, under one deadline: many slow URLs cost one budget, not many."""
        if not refs:
            return []
        deadline = time.monotonic() + self.loader.policy.read_timeout_s

        def load(ref: ImageRef) -> Image.Image | _Refused:
            try:
                return self.loader.load(ref, deadline=deadline)
            except EventError as exc:
                return _Refused(exc, exc.reason)
            except Exception as exc:  # noqa: BLE001 (contained: one image must not stop the stream)
                log.exception("loading an image failed unexpectedly")
                return _Refused(exc, Reason.INTERNAL_ERROR)

        pool = ThreadPoolExecutor(max_workers=min(MAX_IMAGE_THREADS, len(refs)), thread_name_prefix="uapt-image")
        futures = [pool.submit(load, ref) for ref in refs]
        # Fetches end at the deadline by themselves; this bounds what cannot be cut (a name lookup, a decode).
        wait(futures, timeout=max(0.0, deadline + LATE_GRACE_S - time.monotonic()))
        pool.shutdown(wait=False, cancel_futures=True)
        budget = self.loader.policy.read_timeout_s
        error = ImageFetchError(f"image still loading {LATE_GRACE_S} s after the batch's {budget} s budget")
        late = _Refused(error, error.reason)
        return [future.result() if future.done() and not future.cancelled() else late for future in futures]

    def _isolated(self, items: Sequence[_Accepted], result: BatchResult, attempt: int = 1) -> list[_Captioned]:
        """Caption ``items``; on failure split them in halves until each failing post is alone,
        try it ``max_attempts`` times in all, then dead-letter it. Every post ends captioned or refused."""
        try:
            return self._suggest(items, result)
        except _BatchFailure as failure:
            if len(items) > 1:
                log.warning("a batch of %d posts failed (%s); splitting it to find the culprit", len(items), failure)
                half = len(items) // 2
                return self._isolated(items[:half], result) + self._isolated(items[half:], result)
            post = items[0]
            if attempt < self.max_attempts:
                log.warning("post %r failed (%s), try %d of %d", post.event.post_id, failure, attempt, self.max_attempts)
                return self._isolated(items, result, attempt + 1)
            log.error("post %r failed %d times; dead-lettering it: %s", post.event.post_id, attempt, failure)
            self._refuse(result, post.record, failure.cause, failure.reason)
            return []

    def _suggest(self, items: Sequence[_Accepted], result: BatchResult) -> list[_Captioned]:
        """One keyword read and one model call for ``items``; any failure but an outage is a `_BatchFailure`."""
        try:
            with timed(result.stage_seconds, Stage.PROFILE_READ):
                profiles = self.keywords.top_keywords(sorted({a.event.user_id for a in items}), self.top_k)
        except DatabaseUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 (isolated by the caller)
            raise _BatchFailure(Reason.PROFILE_ERROR, exc) from exc
        keyword_terms = [[] if a.fresh else [kw.term for kw in profiles.get(a.event.user_id, [])] for a in items]
        wanted = [min(a.event.num_captions or self.num_captions, self.max_captions) for a in items]
        try:
            with timed(result.stage_seconds, Stage.GENERATE):
                features = [a.features for a in items]
                if any(f is None for f in features):
                    features = self.captioner.encode_images([a.image for a in items])
                captions = self.captioner.caption_encoded(features, keyword_terms, num_captions=max(wanted))
                judgements = self.captioner.judge(features, captions)
            return [_Captioned(*row) for row in zip(items, keyword_terms, wanted, captions, judgements, strict=True)]
        except Exception as exc:  # noqa: BLE001 (isolated by the caller)
            raise _BatchFailure(Reason.MODEL_ERROR, exc) from exc

    def _output(self, done: _Captioned, now_ms: float) -> OutputMessage:
        event, record, judgement = done.item.event, done.item.record, done.judgement
        shown = [] if judgement.abstained else done.suggestions[: done.wanted]
        message = CaptionEvent(
            post_id=event.post_id,
            user_id=event.user_id,
            captions=[CaptionOut(text=c.text, score=float(c.score), confidence=getattr(c, "confidence", None)) for c in shown],
            keywords=done.keywords,
            model=self.captioner.model_id,
            latency_ms=round(max(0.0, now_ms - record.timestamp), 1),
            abstained=judgement.abstained,
            reason=judgement.reason,
            ood_score=judgement.ood_score,
            confidence=judgement.confidence,
        )
        return OutputMessage(event.user_id.encode("utf-8"), message.to_bytes(), event.post_id, record.timestamp)

    @staticmethod
    def _refuse(result: BatchResult, record: Record, error: Exception, reason: Reason | None = None) -> None:
        """Dead-letter ``record``; the label is ``reason``, else the error's own (EventError), else internal_error."""
        label = reason or getattr(error, "reason", Reason.INTERNAL_ERROR)
        result.dead_letters.append(dead_letter(record, error, label))
        result.failures[label] += 1


def _count_judgement(result: BatchResult, judgement: Judgement) -> None:
    """Add a published post's scores and abstention to the batch's figures (the loop turns them into metrics)."""
    if judgement.abstained:
        result.abstentions[judgement.reason] += 1
    if judgement.ood_score is not None:
        result.ood_scores.append(judgement.ood_score)
    if judgement.confidence is not None:
        result.confidences.append(judgement.confidence)


def _placed(forgets: Sequence[tuple[int, str]], folded_positions: Sequence[int]) -> list[PendingForget]:
    """Each (batch position, user_id) forget, placed after the folded posts that precede it."""
    return [PendingForget(user, bisect_left(folded_positions, at)) for at, user in forgets]


def _forgotten_user(record: Record, event: ForgetEvent) -> str:
    """The user a forget event erases; refused unless keyed by that user, the key that orders it with their posts."""
    if record.key != event.user_id.encode("utf-8"):
        raise EventError(
            f"a forget event's key must be its user_id {event.user_id!r}, so that it lands on the partition "
            f"of the user's posts and is applied in order with them; got key {record.key!r}",
            reason=Reason.INVALID_FORGET,
        )
    return event.user_id
