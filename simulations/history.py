"""An append-only record of client operations, as Jepsen records them, for the checkers.

Each operation is recorded twice: when a client *invokes* it and when it *completes*. The
completion says what is known about its effect:

- ``ok``   - it took effect, exactly once, at some instant between invoke and completion;
             ``output`` is what it returned (for a read, the value it saw);
- ``fail`` - it definitely did not take effect (a precondition failed, the request was refused);
             a refusal is also an observation: the state did not meet the precondition at
             some instant between invoke and completion, and ``output`` may hold what the
             refusal reported seeing (e.g. ``{"version": 3}``) for the model to check;
- ``info`` - unknown (timed out, the client crashed): it may or may not have taken effect, at
             any instant after its invoke - even long after the ``info`` was recorded.

An operation still pending when the history is checked counts as ``info``.

Usage::

    h = History()
    op = h.invoke(process=1, key=("md-name-hex", "entry-key-hex"), f="update",
                  value=(b"new", 4), time=now)
    h.ok(op, output=None, time=later)          # or h.fail(op, error, t) / h.info(op, t)
    h.to_jsonl("history.jsonl"); h2 = History.from_jsonl("history.jsonl")

Times are floats from any clock (virtual or wall) or may be omitted. Real-time order is
``(time, recording order)``: two events with equal times are ordered as they were recorded,
which is exact inside one process (a simulator under a mock clock records many events at
one instant). An omitted time counts as the time of the previous recorded event, so a
history recorded with no times at all is ordered purely by recording order.

JSON-lines schema (``to_jsonl`` / ``from_jsonl``), one object per event, in recording order::

    {"index": 0, "op": 0, "type": "invoke", "process": 1, "key": ["ab12", "cd34"],
     "f": "update", "value": [{"$bytes": "6e6577"}, 4], "time": 0.5}
    {"index": 1, "op": 0, "type": "ok", "process": 1, "key": [...], "f": "update",
     "value": [...], "output": null, "time": 0.9}
    {"index": 2, "op": 1, "type": "fail", ..., "error": "InvalidSuccessor: current 3",
     "output": {"version": 3}, "time": 1.2}
    {"index": 3, "op": 2, "type": "info", ..., "error": "timeout", "time": 2.0}

- ``index``: the event's position in the file; ``op``: the operation's number (the order of
  invokes); completions repeat ``process``, ``key``, ``f`` and ``value`` so each line stands alone.
- ``value`` is always the operation's *input*; the result is in ``output`` (``ok`` only) and
  the reason in ``error`` (``fail``/``info``); a ``fail`` may carry ``output`` too: what the
  refusal saw. (Jepsen instead overwrites ``value``.)
- Encoding of values: bytes as ``{"$bytes": "<hex>"}``; tuples and lists as arrays, which
  decode as tuples (so keys and states stay hashable); dicts need string keys; other JSON
  scalars as themselves. Exceptions given as errors are stored as ``"TypeName: message"``.
- An operation with no completion line is pending (counts as ``info``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from os import PathLike
from typing import Any

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"


@dataclass(slots=True, eq=False)
class Op:
    """One operation: its invoke and, once known, its completion.

    ``type`` is ``"invoke"`` while pending, then ``"ok"``, ``"fail"`` or ``"info"``.
    ``invoke_seq`` / ``complete_seq`` are recording positions, the tie-break for equal times.
    """

    index: int
    process: Hashable
    key: Hashable
    f: str
    value: Any
    invoke_time: float
    invoke_seq: int
    type: str = INVOKE
    output: Any = None
    error: Any = None
    complete_time: float | None = None
    complete_seq: int | None = None

    @property
    def pending(self) -> bool:
        return self.type == INVOKE

    @property
    def outcome(self) -> str:
        """``ok``, ``fail`` or ``info``; a still-pending op is ``info`` (its effect is unknown)."""
        return INFO if self.type == INVOKE else self.type

    @property
    def invoked_at(self) -> tuple[float, int]:
        """Real-time position of the invoke: (time, recording position)."""
        return (self.invoke_time, self.invoke_seq)

    @property
    def completed_at(self) -> tuple[float, int]:
        """Real-time position of the completion (an ok, fail or info event)."""
        if self.complete_time is None or self.complete_seq is None:
            raise ValueError(f"op #{self.index} is still pending")
        return (self.complete_time, self.complete_seq)

    @property
    def observed(self) -> Any:
        """What a refusal (a ``fail``) reported seeing, or None: see ``History.fail``."""
        return self.output if self.type == FAIL else None

    @property
    def output_known(self) -> bool:
        """Only an ``ok`` op has an output a model may check; others constrain nothing by it."""
        return self.type == OK

    def describe(self) -> str:
        """One readable line, e.g. ``#7 p2 update((b'x', 3)) ok [2 .. 3.5]``."""
        args = "" if self.value is None else short(self.value)
        result = "pending" if self.pending else self.outcome
        if self.type == OK and (self.output is not None or self.f == "read"):
            result = f"ok -> {short(self.output)}"
        elif self.error is not None:
            result = f"{result} ({short(self.error)})"
        if self.type == FAIL and self.output is not None:
            result = f"{result} saw {short(self.output)}"
        end = (
            "..."
            if self.complete_time is None or self.outcome == INFO
            else f"{self.complete_time:g}"
        )
        return f"#{self.index} p{self.process} {self.f}({args}) {result} [{self.invoke_time:g} .. {end}]"

    def __str__(self) -> str:
        return self.describe()

    def same_as(self, other: Op) -> bool:
        """Field-by-field equality (ops are identity-compared elsewhere, e.g. as dict keys)."""
        return all(getattr(self, n) == getattr(other, n) for n in Op.__slots__)


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the history: an invoke or a completion of operation ``op``."""

    index: int
    op: int
    type: str
    time: float
    output: Any = None
    error: Any = None


class History:
    """An append-only list of events and the operations they describe."""

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._events: list[Event] = []
        self._last_time = 0.0

    # ------------------------------------------------------------------ recording

    def invoke(
        self, process: Hashable, key: Hashable, f: str, value: Any = None, time: float | None = None
    ) -> Op:
        """Record that ``process`` started ``f(value)`` on ``key``; returns the op handle."""
        hash(key)  # fail here, not deep inside a checker, if the key cannot be partitioned on
        t = self._time(time)
        op = Op(len(self._ops), process, key, f, value, t, len(self._events))
        self._ops.append(op)
        self._events.append(Event(len(self._events), op.index, INVOKE, t))
        return op

    def ok(self, op: Op | int, output: Any = None, time: float | None = None) -> Op:
        """The op took effect and returned ``output``."""
        return self._complete(op, OK, time, output=output)

    def fail(
        self, op: Op | int, error: Any = None, time: float | None = None, observed: Any = None
    ) -> Op:
        """The op definitely did not take effect. For a refusal (a version or existence check
        that failed), ``observed`` is what the refusal reported about the state, if anything
        (kept in ``op.output``; its shape is the model's, e.g. ``{"version": 3}``)."""
        return self._complete(op, FAIL, time, error=_error(error), output=observed)

    def info(self, op: Op | int, time: float | None = None, error: Any = None) -> Op:
        """The op's effect is unknown: it may take effect at any time after its invoke, or never."""
        return self._complete(op, INFO, time, error=_error(error))

    def _complete(self, ref: Op | int, kind: str, time: float | None, **fields: Any) -> Op:
        op = self._op(ref)
        if not op.pending:
            raise ValueError(f"op #{op.index} already completed as {op.type!r}")
        t = self._time(time)
        if t < op.invoke_time:
            raise ValueError(
                f"op #{op.index} completes at {t} before its invoke at {op.invoke_time}"
            )
        event = Event(len(self._events), op.index, kind, t, **fields)
        op.type, op.complete_time, op.complete_seq = kind, t, event.index
        op.output, op.error = event.output, event.error
        self._events.append(event)
        return op

    def _op(self, ref: Op | int) -> Op:
        index = ref.index if isinstance(ref, Op) else ref
        if not 0 <= index < len(self._ops) or (isinstance(ref, Op) and self._ops[index] is not ref):
            raise ValueError(f"op {ref!r} does not belong to this history")
        return self._ops[index]

    def _time(self, time: float | None) -> float:
        if time is None:
            return self._last_time
        t = float(time)
        if math.isnan(t) or math.isinf(t):
            raise ValueError(f"event time must be finite, got {time!r}")
        # Events may arrive out of time order (logs merged from several clients), so the
        # "previous" time used for omitted times is simply the last one recorded.
        self._last_time = t
        return t

    # ------------------------------------------------------------------ reading

    def ops(self) -> list[Op]:
        """All operations in invoke order. Pending ones have ``type == "invoke"``; see ``outcome``."""
        return list(self._ops)

    def events(self) -> list[Event]:
        """All events in recording order."""
        return list(self._events)

    def timeline(self) -> list[Event]:
        """All events in real-time order: by time, then recording order."""
        return sorted(self._events, key=lambda e: (e.time, e.index))

    def keys(self) -> list[Hashable]:
        """Distinct keys in first-use order."""
        return list(dict.fromkeys(op.key for op in self._ops))

    def __len__(self) -> int:
        return len(self._ops)

    def __iter__(self) -> Iterator[Op]:
        return iter(self._ops)

    # ------------------------------------------------------------------ JSON lines

    def to_jsonl(self, path: str | PathLike[str]) -> None:
        """Write one JSON object per event (schema in the module docstring)."""
        with open(path, "w", encoding="utf-8") as out:
            for line in self.jsonl_lines():
                out.write(line + "\n")

    def jsonl_lines(self) -> Iterator[str]:
        for event in self._events:
            yield json.dumps(self._event_obj(event), separators=(",", ":"), allow_nan=False)

    def _event_obj(self, event: Event) -> dict[str, Any]:
        op = self._ops[event.op]
        obj: dict[str, Any] = {
            "index": event.index,
            "op": event.op,
            "type": event.type,
            "process": encode(op.process),
            "key": encode(op.key),
            "f": op.f,
            "value": encode(op.value),
            "time": event.time,
        }
        if event.type == OK:
            obj["output"] = encode(event.output)
        elif event.type in (FAIL, INFO):
            obj["error"] = encode(event.error)
            if event.output is not None:
                obj["output"] = encode(event.output)
        return obj

    @classmethod
    def from_jsonl(cls, path: str | PathLike[str]) -> History:
        with open(path, encoding="utf-8") as src:
            return cls.from_lines(src)

    @classmethod
    def from_lines(cls, lines: Any) -> History:
        """Rebuild a history from JSON lines, checking that they describe a possible history."""
        h = cls()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                h._replay(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"history line {number}: {exc}") from exc
        return h

    def _replay(self, obj: dict[str, Any]) -> None:
        kind = obj["type"]
        if kind == INVOKE:
            op = self.invoke(
                decode(obj["process"]),
                decode(obj["key"]),
                obj["f"],
                decode(obj["value"]),
                obj["time"],
            )
            if op.index != obj["op"]:
                raise ValueError(f"invoke of op {obj['op']} out of order (expected op {op.index})")
        elif kind == OK:
            self.ok(obj["op"], decode(obj.get("output")), obj["time"])
        elif kind == FAIL:
            self.fail(obj["op"], decode(obj.get("error")), obj["time"], decode(obj.get("output")))
        elif kind == INFO:
            self.info(obj["op"], obj["time"], decode(obj.get("error")))
        else:
            raise ValueError(f"unknown event type {kind!r}")


# ---------------------------------------------------------------------- value encoding


def encode(value: Any) -> Any:
    """A JSON-ready form of a history value (bytes as {"$bytes": hex}, tuples as arrays)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": bytes(value).hex()}
    if isinstance(value, tuple | list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"history dicts need string keys: {value!r:.60}")
        return {k: encode(v) for k, v in value.items()}
    raise TypeError(
        f"cannot record {type(value).__name__} in a history; use plain data: {value!r:.60}"
    )


def decode(value: Any) -> Any:
    """Inverse of ``encode``; arrays come back as tuples."""
    if isinstance(value, list):
        return tuple(decode(v) for v in value)
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return bytes.fromhex(value["$bytes"])
        return {k: decode(v) for k, v in value.items()}
    return value


def _error(error: Any) -> Any:
    if isinstance(error, BaseException):
        text = str(error)
        return type(error).__name__ + (f": {text}" if text else "")
    return error


def short(value: Any, limit: int = 24) -> str:
    """A compact repr for reports: long byte strings are cut and sized."""
    if isinstance(value, bytes):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}..({len(value)}B)"
    if isinstance(value, tuple):
        inner = ", ".join(short(v, limit) for v in value)
        return f"({inner}{',' if len(value) == 1 else ''})"
    text = repr(value)
    return text if len(text) <= 3 * limit else text[: 3 * limit] + "..."
