"""The close groups a node has worked out, remembered between routing changes.

Replication asks for the group of an item several times per message; working it out from
routing each time was a large part of a simulated message's cost. `CloseGroups` keeps the
groups asked for and, when routing gains or loses contacts, brings them up to date instead
of forgetting them all (see `CloseGroups.regroup`). Pure bookkeeping: the node core
(node/core.py) owns it and says when routing changed.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Protocol

from .xorname import XorName

_NONE_DEMOTED: frozenset[bytes] = frozenset()
MAX_REMEMBERED = 4096


class _Routing(Protocol):
    def __len__(self) -> int: ...
    def names(self) -> frozenset[XorName]: ...
    def closest_names(self, target: bytes, count: int, *,
                      exclude: AbstractSet[bytes] | None = None) -> list[XorName]: ...


class CloseGroups:
    def __init__(self, routing: _Routing) -> None:
        self.routing = routing
        self.known: dict[tuple[bytes, int], tuple[XorName, ...]] = {}  # (name, count) -> group
        self._stamp: tuple[int, int, frozenset[bytes]] = (-1, 0, frozenset())
        self._members: frozenset[XorName] | None = None  # routing's names when last regrouped

    def get(self, name: bytes, count: int, epoch: int, demoted: set[bytes] | None) -> list[XorName]:
        """The `count` nearest to `name` of routing's contacts (less `demoted`) and the node;
        `epoch` changes whenever routing gains or loses a contact."""
        epoch_seen, size, left_out = self._stamp
        if (epoch_seen != epoch or size != len(self.routing) or len(self.known) > MAX_REMEMBERED
                or left_out != (_NONE_DEMOTED if demoted is None else demoted)):
            self.regroup((epoch, len(self.routing), _NONE_DEMOTED if demoted is None else frozenset(demoted)))
        # An XorName hashes and compares as its bytes, so either finds the same entry.
        key = (name if type(name) is bytes or type(name) is XorName else bytes(name), count)
        found = self.known.get(key)
        if found is None:
            found = self.known[key] = tuple(self.routing.closest_names(name, count, exclude=demoted))
        return list(found)

    def regroup(self, stamp: tuple[int, int, frozenset[bytes]]) -> None:
        """Routing or the demoted peers changed: bring the remembered groups up to date.

        A group is the `count` nearest of routing's contacts (less the demoted) and us. A
        group short of `count` holds every candidate, so it only loses who left and gains who
        arrived; a full one gains an arrival nearer than its farthest member, in its place.
        Only a full group that lost a member must be looked up again (it is dropped, and
        `get` asks routing for it when next wanted). A change of the demoted peers drops all.
        """
        members = self.routing.names()
        old_members, self._members = self._members, members
        if self._stamp[2] != stamp[2] or len(self.known) > MAX_REMEMBERED or old_members is None:
            self.known, self._stamp = {}, stamp
            return
        self._stamp = stamp
        gone = old_members - members
        arrived = [(int.from_bytes(n, "big"), n) for n in members - old_members if n not in stamp[2]]
        if not gone and not arrived:
            return
        kept: dict[tuple[bytes, int], tuple[XorName, ...]] = {}
        for key, found in self.known.items():
            count = key[1]
            if gone and not gone.isdisjoint(found):
                if len(found) >= count:
                    continue
                found = tuple(n for n in found if n not in gone)
            if arrived:
                t = int.from_bytes(key[0], "big")
                if len(found) < count:
                    nearer = [n for _i, n in arrived]
                else:
                    farthest = int.from_bytes(found[-1], "big") ^ t
                    nearer = [n for i, n in arrived if i ^ t < farthest]
                if nearer:
                    found = tuple(sorted((*found, *nearer), key=lambda n: int.from_bytes(n, "big") ^ t)[:count])
            kept[key] = found
        self.known = kept
