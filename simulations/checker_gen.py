"""Histories linearizable by construction, for the checker's tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Hashable
from typing import Any

from .checker_models import MDEntryModel, Model, get_model
from .history import History, Op


def random_history(
    rng: random.Random,
    n_ops: int,
    n_keys: int = 1,
    concurrency: int = 5,
    *,
    info_rate: float = 0.05,
    model: str | Model = "md_entry",
) -> tuple[History, dict[Hashable, Any]]:
    """A linearizable history by construction, and each key's true final state.

    ``concurrency`` clients run ops against a sequential model; each op takes effect at a
    random instant between its invoke and completion. About ``info_rate`` of the ops end as
    ``info`` instead: half of those took effect before the info was recorded; of the others
    most take effect at some random later moment (even long after) and the rest never do. A
    few ops are left pending at the end.
    """
    return _Generator(rng, get_model(model), n_keys, concurrency, info_rate).run(n_ops)


class _Generator:
    def __init__(
        self, rng: random.Random, model: Model, n_keys: int, concurrency: int, info_rate: float
    ):
        self.rng, self.model, self.info_rate = rng, model, info_rate
        self.keys = [f"k{i}" for i in range(n_keys)]
        self.states: dict[Hashable, Any] = {k: model.init() for k in self.keys}
        self.history = History()
        self.time = 0.0
        self.pids = list(range(concurrency))
        self.next_pid = concurrency
        # a busy slot is [op, applied?, output, took effect?]
        self.slots: list[list[Any] | None] = [None] * concurrency
        self.zombies: list[Op] = []  # reported info before taking effect; may take effect later

    def run(self, n_ops: int) -> tuple[History, dict[Hashable, Any]]:
        rng, invoked = self.rng, 0
        while invoked < n_ops or any(self.slots):
            self.time += rng.random() if rng.random() < 0.8 else 0.0  # equal times happen
            if self.zombies and rng.random() < 0.05:
                self._apply(self.zombies.pop(rng.randrange(len(self.zombies))))
            s = rng.randrange(len(self.slots))
            slot = self.slots[s]
            if slot is None:
                if invoked < n_ops:
                    self.slots[s] = [self._invoke(s), False, None, False]
                    invoked += 1
            elif invoked >= n_ops and rng.random() < 0.1:
                self.slots[s] = None  # left pending: the client never reported back
            elif not slot[1]:
                if rng.random() < self.info_rate / 2:  # half the info ops crash before applying
                    self._crash(s, slot[0], zombie=True)
                else:
                    slot[1] = True
                    slot[3], slot[2] = self._apply(slot[0])
            else:
                self._complete(s, slot)
        return self.history, dict(self.states)

    def _apply(self, op: Op) -> tuple[bool, Any]:
        state = self.states[op.key]
        ok, new_state = self.model.step(state, op)
        output = state if self.model.is_read(op) else None
        if not ok:  # refused: what the refusal reports having seen
            output = {"version": self.model.state_guard(state)} if isinstance(self.model, MDEntryModel) \
                else {"value": state}
        if ok:
            self.states[op.key] = new_state
        return ok, output

    def _complete(self, s: int, slot: list[Any]) -> None:
        op, _, output, took_effect = slot
        if self.rng.random() < self.info_rate / 2:
            self._crash(s, op, zombie=False)
        elif took_effect:
            self.history.ok(op, output, self.time)
            self.slots[s] = None
        else:
            self.history.fail(op, "precondition", self.time, observed=output)
            self.slots[s] = None

    def _crash(self, s: int, op: Op, zombie: bool) -> None:
        self.history.info(op, self.time, "timeout")
        if zombie and self.rng.random() < 0.7:
            self.zombies.append(op)
        # As in Jepsen, a client whose op is indeterminate is replaced by a fresh process.
        self.pids[s], self.next_pid = self.next_pid, self.next_pid + 1
        self.slots[s] = None

    def _invoke(self, s: int) -> Op:
        key = self.rng.choice(self.keys)
        f, value = self._choose(self.states[key], len(self.history))
        return self.history.invoke(self.pids[s], key, f, value, self.time)

    def _choose(self, state: Any, n: int) -> tuple[str, Any]:
        r = self.rng.random()
        if isinstance(self.model, MDEntryModel):
            content = f"v{n}".encode()
            if state is None:
                if r < 0.6:
                    return "insert", content
                return ("read", None) if r < 0.9 else ("update", (content, 1))
            version = state[1] + (1 if self.rng.random() < 0.9 else 0)  # some clients are stale
            if r < 0.4:
                return "read", None
            if r < 0.85:
                return "update", (content, version)
            return ("delete", version) if r < 0.95 else ("insert", content)
        value = self.rng.randrange(5)
        if r < 0.5:
            return "read", None
        return ("write", value) if r < 0.8 else ("cas", (state if r < 0.9 else value, value))
