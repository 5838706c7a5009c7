"""The vocabulary of persistent subscriptions (settings, what consumers and `info` see) and
the fold of a group's ledger into its state. No I/O here; `persistent` has the API."""

from __future__ import annotations

import enum
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from .errors import InvalidEvent
from .events import MAX_STREAM_NAME, NO_STREAM, RecordedEvent, check_stream_name

ALL = "$all"  # the source name of the whole database log
CATEGORY_PREFIX = "$ce-"  # `$ce-order` names the source "category order"
REGISTRY = "$persistentsubscriptions"
LEDGER_PREFIX = "$persistentsubscription-"
SNAPSHOT_EVERY = 256  # ledger events between snapshots of the folded state
CLAIM_ATTEMPTS = 8  # clashes on the ledger before a consumer pauses for a poll
STRATEGIES = ("RoundRobin", "DispatchToSingle", "Pinned")
PIN_BUCKETS = 1024  # the Pinned strategy hashes stream names into this many buckets

StartFrom = int | Literal["start", "end"]


class NackAction(enum.Enum):
    """What a nack asks for (EventStoreDB's Nak actions)."""

    UNKNOWN = "unknown"  # as RETRY
    PARK = "park"  # to the parked events now
    RETRY = "retry"  # to a consumer again, at once (its retry count grows)
    SKIP = "skip"  # done with, as if acked
    STOP = "stop"  # as RETRY; the consumer should stop


@dataclass(frozen=True)
class PersistentSettings:
    """A group's settings, with EventStoreDB's names and defaults.

    `start_from`: "start", "end" (the source's end when the group is created), or the first
    version (stream source) or log position (category or `$all`) to deliver. `message_timeout`
    (seconds) is how long a consumer holds an event before another may take it;
    `max_retry_count` how often an event is handed out again before it is parked.
    `history_buffer_size` bounds how many events a consumer claims at once (with the
    consumer's own `buffer_size`), `read_batch_size` how many source events one read takes.
    `live_buffer_size`, `checkpoint_after`, `min/max_checkpoint_count`, `extra_statistics`
    are kept for clients that send them; state is checkpointed by ledger snapshots instead.
    `consumer_strategy`: "RoundRobin" (events go to whichever consumer asks),
    "DispatchToSingle" (the same, one consumer at a time is the usual taker) or "Pinned" (the
    events of one stream go to one consumer while it lives: streams are hashed into buckets,
    a bucket is pinned to a live consumer and moves only when that one leaves or is silent
    for `message_timeout`). `max_subscriber_count` 0 means no limit.
    """

    start_from: StartFrom = "end"
    resolve_links: bool = False
    message_timeout: float = 30.0
    max_retry_count: int = 10
    live_buffer_size: int = 500
    read_batch_size: int = 20
    history_buffer_size: int = 500
    checkpoint_after: float = 2.0
    min_checkpoint_count: int = 10
    max_checkpoint_count: int = 1000
    max_subscriber_count: int = 0
    consumer_strategy: str = "RoundRobin"
    extra_statistics: bool = False

    def __post_init__(self) -> None:
        if not (self.start_from in ("start", "end") or isinstance(self.start_from, int) and self.start_from >= 0):
            raise InvalidEvent("start_from is 'start', 'end' or a version/position >= 0")
        if not self.message_timeout > 0:
            raise InvalidEvent("message_timeout is a positive number of seconds")
        for name in ("max_retry_count", "max_subscriber_count"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InvalidEvent(f"{name} is an int >= 0")
        for name in ("live_buffer_size", "read_batch_size", "history_buffer_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InvalidEvent(f"{name} is a positive int")
        if self.consumer_strategy not in STRATEGIES:
            raise InvalidEvent(f"consumer strategy {self.consumer_strategy!r}: {', '.join(STRATEGIES)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> PersistentSettings:
        known = {k: v for k, v in obj.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass(frozen=True)
class PersistentEvent:
    """An event handed to a consumer: ack or nack it by this object or by `event.id`."""

    event: RecordedEvent
    retry_count: int  # how often it was handed out before this time

    @property
    def id(self) -> uuid.UUID:
        return self.event.id


@dataclass(frozen=True)
class ParkedEvent:
    event: RecordedEvent
    reason: str
    retry_count: int


@dataclass(frozen=True)
class InFlight:
    """An event a consumer holds: handed out, not yet acked or nacked."""

    stream: str
    version: int
    position: int
    consumer: str
    deadline: float  # store clock: after it, another consumer may take the event
    retry_count: int


@dataclass(frozen=True)
class ConsumerInfo:
    name: str  # as given to `subscribe`, with a suffix that tells two processes apart
    in_flight: int  # events it holds now
    acked: int
    nacked: int
    last_seen: float  # store clock of its last claim, ack or nack


@dataclass(frozen=True)
class GroupInfo:
    """What `info` and `list` report of a group (EventStoreDB's SubscriptionInfo, in short)."""

    stream: str  # the source: a stream, `$ce-<category>` or `$all`
    group: str
    settings: PersistentSettings
    status: str  # "live" (no consumer has been seen within the timeout: "idle")
    consumers: tuple[ConsumerInfo, ...]
    in_flight: int
    parked: int
    replaying: int  # parked events queued for delivery again
    delivered: int  # events handed out from the source so far
    acked: int
    last_checkpoint: int | None  # the source cursor (version or position) of the last taken event
    last_known: int | None  # the source's last event, as far as `info` read
    lag: int  # source events not yet handed out (counted up to 10,000)


# --------------------------------------------------------------------------- the group's state

Ref = tuple[str, int, int]  # (stream, version, position) of a source event


@dataclass
class _Held:
    ref: Ref
    consumer: str
    deadline: float
    retries: int


@dataclass
class _State:
    """The fold of a ledger: what every consumer agrees on at a given ledger version."""

    version: int = NO_STREAM  # the ledger's version this state includes
    cursor: int | None = None  # checkpoint of the last source event taken (None: none yet)
    held: dict[int, _Held] = field(default_factory=dict)  # by position
    parked: list[tuple[Ref, str, int]] = field(default_factory=list)  # (ref, reason, retries)
    replay: list[Ref] = field(default_factory=list)
    delivered: int = 0
    acked: dict[str, int] = field(default_factory=dict)
    nacked: dict[str, int] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    pins: dict[int, str] = field(default_factory=dict)  # Pinned: bucket -> consumer

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "cursor": self.cursor,
            "held": [[list(h.ref), h.consumer, h.deadline, h.retries] for h in self.held.values()],
            "parked": [[list(r), why, n] for r, why, n in self.parked], "replay": [list(r) for r in self.replay],
            "delivered": self.delivered, "acked": self.acked, "nacked": self.nacked, "seen": self.seen,
            "pins": [[b, c] for b, c in self.pins.items()],
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> _State:
        def ref(r: list[Any]) -> Ref:
            return (str(r[0]), int(r[1]), int(r[2]))

        held = {ref(h[0])[2]: _Held(ref(h[0]), str(h[1]), float(h[2]), int(h[3])) for h in obj["held"]}
        return cls(
            int(obj["version"]), obj["cursor"], held, [(ref(r), str(w), int(n)) for r, w, n in obj["parked"]],
            [ref(r) for r in obj["replay"]], int(obj["delivered"]), dict(obj["acked"]), dict(obj["nacked"]),
            dict(obj["seen"]), {int(b): str(c) for b, c in obj.get("pins", [])},
        )

    def apply(self, version: int, kind: str, data: dict[str, Any], generation: int) -> None:
        self.version = version
        if data.get("g") != generation:
            return  # an action of an earlier group of the same name
        who = str(data.get("c", ""))
        if who and "t" in data:
            self.seen[who] = float(data["t"])
        if kind == "$psClaim":
            # A claim takes events for its maker; under Pinned an item may name the consumer
            # it is handed to instead (its 4th element, or [key, consumer] for a retry).
            for r in data.get("n", []):
                item = (str(r[0]), int(r[1]), int(r[2]))
                self.held[item[2]] = _Held(item, str(r[3]) if len(r) > 3 else who, float(data["d"]), 0)
                self.delivered += 1
            for key in data.get("r", []):
                key, to = (int(key[0]), str(key[1])) if isinstance(key, list) else (int(key), who)
                held = self.held.get(key)
                if held is not None:
                    held.consumer, held.deadline, held.retries = to, float(data["d"]), held.retries + 1
            for r in data.get("p", []):
                item = (str(r[0]), int(r[1]), int(r[2]))
                if item in self.replay:
                    self.replay.remove(item)
                self.held[item[2]] = _Held(item, str(r[3]) if len(r) > 3 else who, float(data["d"]), 0)
            for bucket, consumer in data.get("pin", []):
                self.pins[int(bucket)] = str(consumer)
            if data.get("to") is not None:
                self.cursor = int(data["to"])
        elif kind == "$psLeave":
            self.seen.pop(who, None)  # gone: under Pinned, its buckets go to others at once
        elif kind == "$psAck":
            for key in data.get("k", []):
                if self.held.pop(int(key), None) is not None:
                    self.acked[who] = self.acked.get(who, 0) + 1
        elif kind == "$psNack":
            action = data.get("a", "retry")
            for key in data.get("k", []):
                held = self.held.get(int(key))
                if held is None:
                    continue
                self.nacked[who] = self.nacked.get(who, 0) + 1
                if action == NackAction.SKIP.value:
                    del self.held[int(key)]
                elif action == NackAction.PARK.value:
                    del self.held[int(key)]
                    self.parked.append((held.ref, str(data.get("why", "")), held.retries))
                else:
                    held.deadline = 0.0  # anyone may take it now
        elif kind == "$psPark":
            for key in data.get("k", []):
                held = self.held.pop(int(key), None)
                if held is not None:
                    self.parked.append((held.ref, str(data.get("why", "")), held.retries))
        elif kind == "$psReplay":
            n = len(self.parked) if data.get("n") is None else int(data["n"])
            moved, self.parked = self.parked[:n], self.parked[n:]
            self.replay.extend(ref for ref, _why, _retries in moved)




def ledger_stream(stream: str, group: str) -> str:
    return f"{LEDGER_PREFIX}{stream}::{group}"


def parked_stream(stream: str, group: str) -> str:
    return ledger_stream(stream, group) + "-parked"


def _check_names(stream: str, group: str) -> None:
    if stream != ALL:
        check_stream_name(stream[len(CATEGORY_PREFIX):] if stream.startswith(CATEGORY_PREFIX) else stream)
    if stream.startswith("$") and stream != ALL and not stream.startswith(CATEGORY_PREFIX):
        raise InvalidEvent(f"{stream!r}: a group reads a stream, '$ce-<category>' or '$all'")
    if not isinstance(group, str) or not group or any(ord(c) < 32 for c in group) or "::" in group:
        raise InvalidEvent("a group name is a non-empty string without control characters or '::'")
    if len(parked_stream(stream, group)) > MAX_STREAM_NAME or len(ledger_stream(stream, group)) + 11 > MAX_STREAM_NAME:
        raise InvalidEvent("the stream and group names are too long together")


@dataclass(frozen=True)
class _Group:
    stream: str
    group: str
    settings: PersistentSettings
    generation: int  # the registry version of its creation
    start: int | None  # the checkpoint before the first event to deliver
