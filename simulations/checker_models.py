"""The sequential models the linearizability checker (`simulations.checker`) tests
histories against: an MD entry as a versioned register (`MDEntryModel`) and the classic
read/write/cas register (`RegisterModel`). A model is a small class with ``init()`` and
``step(state, op) -> (ok, new_state)``; a refusal is checked with ``refused``. They are
written from the spec (docs/data-model.md), not on top of ``node.rules``: a checker that
shared the code under test would share its bugs.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from .history import FAIL, Op, short

TOMBSTONE = b""
_MUTATIONS = ("insert", "update", "delete")


class Model:
    """What one key's object does when an op takes effect. States must be hashable."""

    name = "model"

    def init(self) -> Hashable:
        return None

    def step(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """Whether ``op`` can take effect in ``state`` (with its recorded output, if known).

        It must depend only on ``op.f``, ``op.value`` and, when ``op.output_known``,
        ``op.output`` - not on the process or times (the search relies on it). Refusals go to
        ``refused`` instead (see ``apply``).
        """
        raise NotImplementedError

    def is_read(self, op: Op) -> bool:
        """Ops that never change the state: an indeterminate one constrains nothing."""
        return False

    def is_refusal(self, op: Op) -> bool:
        """Whether a ``fail`` op is a refusal that observed the state (checked with
        ``refused``) rather than a failure that says nothing about it (then it is dropped).
        By default no failure is an observation."""
        return False

    def refused(self, state: Hashable, op: Op) -> bool:
        """Whether refusing ``op`` is right in ``state``: it could not take effect there, and
        ``op.observed`` (what the refusal reported, if anything) matches. The state is left
        unchanged."""
        return not self.step(state, op)[0]

    def apply(self, state: Hashable, op: Op) -> tuple[bool, Hashable]:
        """``step`` for ops that may take effect; ``refused`` for a refusal (state unchanged)."""
        if op.type == FAIL:
            return self.refused(state, op), state
        return self.step(state, op)

    def guard(self, op: Op) -> Hashable | None:
        """Optional speed-up: a value such that ``op`` can take effect only in states whose
        ``state_guard`` equals it (None: no such promise). Lets the search skip crashed
        conditional writes that can no longer apply instead of retrying them at every step."""
        return None

    def state_guard(self, state: Hashable) -> Hashable:
        return None

    def explain(self, state: Hashable, op: Op) -> str:
        """Why ``op`` cannot take effect in ``state``, for counterexamples."""
        return f"{op.f} is not possible in state {self.show(state)}"

    def show(self, state: Hashable) -> str:
        return short(state)


def as_entry(value: Any) -> tuple[bytes, int] | None:
    """An MD entry as ``(content, entry_version)`` from a tuple, list or Value-like object."""
    if value is None or (type(value) is tuple and len(value) == 2):
        return value
    if isinstance(value, tuple | list) and len(value) == 2:
        return (value[0], value[1])
    if hasattr(value, "content") and hasattr(value, "entry_version"):
        return (value.content, value.entry_version)
    raise ValueError(f"not an MD entry (content, version): {value!r:.60}")


def _insert_content(value: Any) -> bytes:
    # SAFE's Ins carries a whole Value whose version is ignored; accept that form too.
    if isinstance(value, bytes):
        return value
    entry = as_entry(value)
    if entry is None:
        raise ValueError("insert needs content")
    return entry[0]


def _update_args(op: Op) -> tuple[bytes, int]:
    entry = as_entry(op.value)
    if entry is None:
        raise ValueError(f"update needs (content, version), op #{op.index} has None")
    return entry


class MDEntryModel(Model):
    """One MD entry (docs/data-model.md §1.3) as a versioned register.

    State: ``None`` (absent) or ``(content, entry_version)``; a tombstone is ``(b"", v)``.

    ======================  ======================  =================================
    op ``f``                ``value``               takes effect when / new state
    ======================  ======================  =================================
    ``read``                -                       output (None or (content, version)) == state
    ``insert``              content                 absent -> (content, 0)
    ``update``              (content, version)      present and version == current+1
    ``delete``              version                 present and version == current+1 -> (b"", version)
    ======================  ======================  =================================

    A refused mutation (a ``fail`` whose error names a failed check - ``InvalidEntryActions``,
    ``InvalidSuccessor``, ``EntryExists``, ``NoSuchEntry`` - or that carries an observation)
    is checked like a read: the mutation could not apply, and if it reported
    ``{"version": v}`` (-1 for absent) the entry was at version ``v``.
    """

    REFUSALS = frozenset({"InvalidEntryActions", "InvalidSuccessor", "EntryExists", "NoSuchEntry"})

    name = "md_entry"

    def is_read(self, op: Op) -> bool:
        return op.f == "read"

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (not op.output_known or as_entry(op.output) == state), state
        if f == "insert":
            if state is not None:
                return False, state
            return True, (_insert_content(op.value), 0)
        if f == "update":
            content, version = _update_args(op)
            if state is None or version != state[1] + 1:
                return False, state
            return True, (content, version)
        if f == "delete":
            if state is None or op.value != state[1] + 1:
                return False, state
            return True, (TOMBSTONE, op.value)
        raise ValueError(f"md_entry model has no op {f!r} (op #{op.index})")

    def guard(self, op: Op) -> Hashable | None:
        # insert applies only when absent (version -1); update/delete only at version v - 1
        if op.f == "insert":
            return -1
        if op.f == "update":
            return _update_args(op)[1] - 1
        if op.f == "delete":
            return op.value - 1
        return None

    def state_guard(self, state: Any) -> int:
        return -1 if state is None else state[1]

    def is_refusal(self, op: Op) -> bool:
        return op.f in _MUTATIONS and (
            op.observed is not None or error_name(op.error) in self.REFUSALS
        )

    def refused(self, state: Any, op: Op) -> bool:
        if self.step(state, op)[0]:
            return False
        seen = observed_field(op, "version")
        return seen is None or seen == self.state_guard(state)

    def explain(self, state: Any, op: Op) -> str:
        now = "absent" if state is None else f"{self.show(state)}"
        if op.type == FAIL:
            if self.step(state, op)[0]:
                return f"refused, but {op.f} applies to the entry as it is: {now}"
            return f"refused reporting v{observed_field(op, 'version')} but the entry is {now}"
        if op.f == "read":
            return f"read saw {short(op.output)} but the entry is {now}"
        if op.f == "insert":
            return f"insert needs the entry absent; it is {now}"
        if state is None:
            return f"{op.f} needs the entry present; it is absent"
        version = _update_args(op)[1] if op.f == "update" else op.value
        return f"{op.f} to v{version} needs current version v{version - 1}; it is {now}"

    def show(self, state: Any) -> str:
        if state is None:
            return "absent"
        content, version = state
        return f"{short(content)}@v{version}" + (" (tombstone)" if content == TOMBSTONE else "")


class RegisterModel(Model):
    """A read/write/compare-and-set register, initially ``None``.

    ``read`` -> output == state; ``write(v)`` -> v; ``cas((old, new))`` -> new if state == old.
    A failed ``cas`` is a refusal: the register did not hold ``old`` at some instant of the
    call, and held ``v`` if the refusal reported ``{"value": v}``.
    """

    name = "register"

    def is_read(self, op: Op) -> bool:
        return op.f == "read"

    def step(self, state: Any, op: Op) -> tuple[bool, Any]:
        f = op.f
        if f == "read":
            return (not op.output_known or op.output == state), state
        if f == "write":
            return True, op.value
        if f == "cas":
            old, new = op.value
            return (True, new) if state == old else (False, state)
        raise ValueError(f"register model has no op {f!r} (op #{op.index})")

    def guard(self, op: Op) -> Hashable | None:
        return op.value[0] if op.f == "cas" else None  # cas(old, new) needs state == old

    def is_refusal(self, op: Op) -> bool:
        return op.f == "cas"

    def refused(self, state: Any, op: Op) -> bool:
        if state == op.value[0]:
            return False
        seen = op.observed
        return not (isinstance(seen, dict) and "value" in seen) or seen["value"] == state

    def state_guard(self, state: Any) -> Hashable:
        return state

    def explain(self, state: Any, op: Op) -> str:
        if op.f == "read":
            return f"read saw {short(op.output)} but the register holds {short(state)}"
        if op.f == "cas" and op.type == FAIL:
            if state == op.value[0]:
                return f"cas refused, but the register holds {short(state)} as it expected"
            return f"cas refused reporting {short(op.observed)} but the register holds {short(state)}"
        if op.f == "cas":
            return f"cas expects {short(op.value[0])} but the register holds {short(state)}"
        return super().explain(state, op)


MODELS: dict[str, Model] = {m.name: m for m in (MDEntryModel(), RegisterModel())}


def error_name(error: Any) -> str:
    """The type name an error was recorded with: ``"InvalidSuccessor: current 3"`` ->
    ``"InvalidSuccessor"`` (also ``Name(...)`` forms)."""
    text = str(error or "")
    for stop in (":", "("):
        text = text.split(stop, 1)[0]
    return text.strip()


def observed_field(op: Op, name: str) -> Any:
    """One field of what a refusal reported (``op.observed``), or None."""
    seen = op.observed
    return seen.get(name) if isinstance(seen, dict) else None


def get_model(model: str | Model) -> Model:
    if isinstance(model, Model):
        return model
    try:
        return MODELS[model]
    except KeyError:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}") from None
