"""Dead letters: the original bytes of a refused event plus headers saying why and where from."""

from __future__ import annotations

from dataclasses import dataclass, replace

from worker.reasons import Reason

MAX_HEADER_CHARS = 1000


@dataclass(frozen=True)
class DeadLetter:
    """One message for the dead-letter topic: same key and value as the input, explained in headers."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def without_value(self) -> DeadLetter:
        """The same letter minus the original bytes, for when they are too large for the topic."""
        size = len(self.value or b"")
        return replace(self, value=None, headers=[*self.headers, ("value_dropped_bytes", str(size).encode())])


def dead_letter(record, error: Exception, reason: Reason) -> DeadLetter:
    """Wrap a refused input ``record`` (anything with topic/partition/offset/key/value) for the DLQ."""
    headers = {
        "error": str(error)[:MAX_HEADER_CHARS],
        "error_class": type(error).__name__,
        "reason": str(reason),
        "source_topic": record.topic,
        "source_partition": str(record.partition),
        "source_offset": str(record.offset),
    }
    return DeadLetter(
        key=record.key,
        value=record.value,
        headers=[(name, value.encode("utf-8")) for name, value in headers.items()],
    )
