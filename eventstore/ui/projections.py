"""What the projections page shows: each projection's saved state, checkpoint and lag, and
how it rebuilds one.

Projections save their states back into the database as the stream `projection@NAME`
(eventstore.cqrs): the UI finds them there and reads them with `read_projection`, so it
shows every projection any agent has saved, code or no code.

Rebuilding needs the projection's code (its fold and initial state), which lives in the
app, not in the UI. `safenet ui --projections MODULE:NAME` hands the UI that code; the
projections it knows it can rebuild itself (`ProjectionAgent.rebuild`: a new generation
from the first event — an agent of the app running meanwhile sees the new saved state and
carries on from it). The others show their state and lag, with rebuild unavailable.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ..cqrs import Projection, ProjectionAgent, ProjectionState, read_projection
from ..cqrs.streams import PROJECTION_CATEGORY, is_internal
from ..database import Database
from ..events import CATEGORY_SEPARATOR, category_of

LAG_SCAN = 2000  # log events read past a checkpoint to count the lag; beyond: "at least"


@dataclass(frozen=True)
class ProjectionStatus:
    name: str
    saved: ProjectionState | None  # None: known to the UI, never saved yet
    lag: int  # events after the checkpoint that the projection has still to fold
    lag_is_floor: bool  # the scan stopped: the lag is at least `lag`
    known: bool  # the UI has its code, so it can rebuild it
    categories: list[str] | None  # what it folds (None: every domain event, or unknown)


def load_projections(specs: Iterable[str]) -> dict[str, Projection]:
    """Projections named as `module:attribute`, the attribute a Projection or a list of them."""
    found: dict[str, Projection] = {}
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        if not module_name or not attribute:
            raise ValueError(f"{spec!r}: name a projection as MODULE:ATTRIBUTE")
        try:
            value = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
        items = [value] if isinstance(value, Projection) else list(value) if isinstance(value, list | tuple) else []
        if not items or not all(isinstance(p, Projection) for p in items):
            raise ValueError(f"{spec!r} is not a Projection (nor a list of them)")
        found.update({p.name: p for p in items})
    return found


async def lag_after(db: Database, checkpoint: int | None, categories: list[str] | None) -> tuple[int, bool]:
    """Events after `checkpoint` that the projection folds: domain events of its
    categories (of any category when they are not known; the projections' own saves and
    the library's other streams never count)."""
    start = 0 if checkpoint is None else checkpoint + 1
    found = await db.read_all(start, LAG_SCAN)
    wanted = set(categories) if categories is not None else None
    count = sum(1 for e in found
                if not is_internal(e.stream) and (wanted is None or category_of(e.stream) in wanted))
    return count, len(found) >= LAG_SCAN


async def statuses(db: Database, known: Mapping[str, Projection]) -> list[ProjectionStatus]:
    names: list[str] = []
    async for stream in db.streams(PROJECTION_CATEGORY):
        names.append(stream.partition(CATEGORY_SEPARATOR)[2])
    names += [n for n in known if n not in names]
    out = []
    for name in sorted(names):
        projection = known.get(name)
        categories = list(projection.categories) if projection and projection.categories is not None else None
        saved = await read_projection(db, name)
        lag, floor = await lag_after(db, saved.checkpoint if saved else None, categories)
        out.append(ProjectionStatus(name, saved, lag, floor, projection is not None, categories))
    return out


async def rebuild(db: Database, projection: Projection) -> str:
    """Start `projection` over from the first event and fold the whole log."""
    state = await ProjectionAgent(db, [projection]).rebuild(projection.name)
    return (f"{projection.name} rebuilt: generation {state.generation}, {state.events} events folded, "
            f"checkpoint {state.checkpoint}")
