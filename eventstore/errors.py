"""The event store's errors: types a user can catch, each carrying the facts to act on.

Network failures are not wrapped: a `node.errors.NetworkError` (a timeout, no quorum) that
survives the store's own bounded retries reaches the caller as itself, and means the outcome
of a write is unknown. Retrying the same append with the same event ids is then safe: the
store recognises events it already holds (see `Database.append`).
"""

from __future__ import annotations

from node.errors import AccessDenied


class EventStoreError(Exception):
    """Root of every error the event store raises on purpose."""


class NotAWriter(AccessDenied, EventStoreError):
    """This key may not append to the database: it is not one of its writers (the owner
    adds one with `Database.add_writer`, `safenet es db add-writer`). Also an
    `AccessDenied`, which is what the network said or would say."""

    def __init__(self, database: str, key: bytes) -> None:
        self.database = database
        self.key = bytes(key)
        super().__init__(f"key {self.key.hex()[:16]}.. is not a writer of database {database!r}: "
                         f"its owner can run `safenet es db add-writer {database} {self.key.hex()}`")


class NotTheOwner(AccessDenied, EventStoreError):
    """Only the database's owner (the account, or the key, that owns its MDs) changes its
    writers."""


class WrongExpectedVersion(EventStoreError):
    """The stream was not at the version the append expected; nothing was written.

    `actual` is the stream's version when the conflict was seen (NO_STREAM, -1, if it has
    no events), so the caller can reload and decide.
    """

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r}: expected version {_version_name(expected)}, "
            f"actual {_version_name(actual)}"
        )


class StreamDeleted(EventStoreError):
    """The stream was hard-deleted (it ends in a tombstone); its name can never be reused."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} is deleted")


class StreamNotFound(EventStoreError):
    """The stream has no events a reader may see (never written, or soft-deleted)."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        super().__init__(f"stream {stream!r} not found")


class DatabaseNotFound(EventStoreError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"database {name!r} not found")


class DatabaseExists(EventStoreError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"database {name!r} already exists")


class InvalidEvent(EventStoreError, ValueError):
    """An event (or stream name, or batch) the store cannot record: too big, empty, badly typed."""


class ReservedName(InvalidEvent):
    """A user's append named a stream or an event type starting with `$`: those belong to
    the store (tombstones, stream metadata, corrections). Bad input, never retried; the
    command line answers it with exit code 2 (bad usage)."""


class CorruptData(EventStoreError):
    """Something on the network does not decode as the event store wrote it, or an address
    the store derives is held by another owner. Never retried silently."""


def _version_name(version: int) -> str:
    names = {-1: "NO_STREAM", -2: "ANY", -4: "STREAM_EXISTS"}
    return names.get(version, str(version))


class PersistentSubscriptionExists(EventStoreError):
    """A persistent subscription group of that name already exists on that stream."""

    def __init__(self, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        super().__init__(f"persistent subscription {group!r} on {stream!r} already exists")


class PersistentSubscriptionNotFound(EventStoreError):
    """No persistent subscription group of that name on that stream (or it was deleted)."""

    def __init__(self, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        super().__init__(f"persistent subscription {group!r} on {stream!r} not found")


class MaximumSubscribersReached(EventStoreError):
    """The group already has `max_subscriber_count` live consumers."""

    def __init__(self, stream: str, group: str) -> None:
        self.stream = stream
        self.group = group
        super().__init__(f"persistent subscription {group!r} on {stream!r} has its maximum of consumers")


class PersistentSubscriptionDropped(EventStoreError):
    """A consumer's subscription ended: its group was deleted or its settings changed (as
    EventStoreDB drops its consumers then; subscribe again)."""
