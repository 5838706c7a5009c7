"""The transport's chaos hook: which messages an endpoint drops or delays.

An `Endpoint` asks its `FaultHook` before each message leaves and after each one arrives.
`FaultRules` is the hook the node process uses: partitions (one way or both), loss and delay
drawn from a seeded RNG, slow links to named peers (a clogged link), all changeable at run
time by an admin message (`configure`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .wire import Message
from .xorname import XorName

MAX_SLOW = 1024  # peers with a clogged link; more would be a mistake, not a test
MAX_SLOW_SECONDS = 3600.0


class FaultHook(Protocol):
    """What an Endpoint asks before sending and after receiving each message."""

    def outbound(self, to_name: XorName, msg: Message) -> float | None:
        """None drops the message; otherwise a delay in seconds (0 = now)."""

    def inbound(self, from_name: XorName, msg: Message) -> bool:
        """False drops the message."""


class FaultRules:
    """A seeded FaultHook: blocked peers, loss probability, uniform delay.

    `block_out` drops everything we send to those names, `block_in` everything we receive from
    them; blocking one without the other gives an asymmetric partition. `loss` applies to
    outbound messages only, so a message crossing two faulty endpoints isn't lost twice over.
    Delays are drawn uniformly from `delay` = (low, high) seconds; distinct delays reorder.
    `slow` maps a peer's name to extra seconds every message to it waits (a clogged link).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        rng: random.Random | None = None,
        loss: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        block_out: Iterable[bytes] = (),
        block_in: Iterable[bytes] = (),
        slow: Mapping[bytes, float] | None = None,
    ) -> None:
        self.rng = rng if rng is not None else random.Random(seed)
        self.loss = _check_probability(loss)
        self.delay = _check_delay(delay)
        self.block_out: set[XorName] = {XorName(n) for n in block_out}
        self.block_in: set[XorName] = {XorName(n) for n in block_in}
        self.slow: dict[XorName, float] = _slow(slow or {})

    def outbound(self, to_name: XorName, msg: Message) -> float | None:
        if to_name in self.block_out:
            return None
        if self.loss and self.rng.random() < self.loss:
            return None
        low, high = self.delay
        extra = self.slow.get(to_name, 0.0) if self.slow else 0.0
        if high <= 0:
            return extra
        return self.rng.uniform(low, high) + extra

    def inbound(self, from_name: XorName, msg: Message) -> bool:
        return from_name not in self.block_in

    def block(self, name: bytes, *, outbound: bool = True, inbound: bool = True) -> None:
        if outbound:
            self.block_out.add(XorName(name))
        if inbound:
            self.block_in.add(XorName(name))

    def heal(self) -> None:
        """Lift every partition and clogged link (loss and delay stay as they are)."""
        self.block_out.clear()
        self.block_in.clear()
        self.slow.clear()

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply an admin message's settings; keys: loss, delay [low, high], block_out,
        block_in (lists of names as bytes or hex), slow ({name: seconds}), seed. All are
        checked before any applies."""
        unknown = set(config) - {"loss", "delay", "block_out", "block_in", "slow", "seed"}
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        loss = _check_probability(config.get("loss", self.loss))
        delay = _check_delay(config.get("delay", self.delay))
        block_out = _names(config["block_out"]) if "block_out" in config else self.block_out
        block_in = _names(config["block_in"]) if "block_in" in config else self.block_in
        slow = _slow(config["slow"]) if "slow" in config else self.slow
        seed = config.get("seed")
        if seed is not None and not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.loss, self.delay = loss, delay
        self.block_out, self.block_in = set(block_out), set(block_in)
        self.slow = dict(slow)
        if seed is not None:
            self.rng.seed(seed)

    def config(self) -> dict[str, Any]:
        """The current settings, in the shape `configure` takes."""
        config: dict[str, Any] = {
            "loss": self.loss,
            "delay": list(self.delay),
            "block_out": sorted(n.hex() for n in self.block_out),
            "block_in": sorted(n.hex() for n in self.block_in),
        }
        if self.slow:
            config["slow"] = {n.hex(): s for n, s in sorted(self.slow.items())}
        return config


def _check_probability(value: Any) -> float:
    if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"loss is a probability in [0, 1], got {value!r}")
    return float(value)


def _check_delay(value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"delay is [low, high] seconds, got {value!r}") from None
    if not 0.0 <= low <= high or math.isinf(high):
        raise ValueError(f"delay needs 0 <= low <= high < inf, got {value!r}")
    return low, high


def _slow(values: Any) -> dict[XorName, float]:
    if not isinstance(values, Mapping):
        raise ValueError(f"slow is a map of name to seconds, got {values!r:.60}")
    if len(values) > MAX_SLOW:
        raise ValueError(f"slow names at most {MAX_SLOW} peers, got {len(values)}")
    out: dict[XorName, float] = {}
    for name, seconds in values.items():
        (key,) = _names([name])
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not 0.0 <= seconds <= MAX_SLOW_SECONDS:
            raise ValueError(f"a slow link waits 0..{MAX_SLOW_SECONDS:g} s, got {seconds!r:.60}")
        out[key] = float(seconds)
    return out


def _names(values: Any) -> set[XorName]:
    if not isinstance(values, list | tuple | set | frozenset):
        raise ValueError(f"a list of names, got {values!r:.60}")
    names: set[XorName] = set()
    for value in values:
        # Only bytes or hex: XorName(an int) would try to allocate that many bytes.
        if isinstance(value, str):
            names.add(XorName.from_hex(value))
        elif isinstance(value, bytes):
            names.add(XorName(value))
        else:
            raise ValueError(f"a name is 32 bytes or 64 hex digits, got {value!r:.60}")
    return names
