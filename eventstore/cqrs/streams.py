"""Where the library keeps its own streams, and how to tell them from the domain's.

Snapshots, projection states and process-manager states live in the same database as the
events they derive from, in categories of their own. Projections and process managers
follow the log, so they must skip these streams, or a projection over every event would
see its own saved states and never settle.
"""

from __future__ import annotations

from eventstore.events import CATEGORY_SEPARATOR, category_of, is_system

PROJECTION_CATEGORY = "projection"  # projection@NAME: one event per saved state
PROCESS_CATEGORY = "process"  # process@NAME: a process manager's steps
SNAPSHOT_SUFFIX = "-snapshot"  # NoteBook-snapshot@ID: snapshots of NoteBook@ID

INTERNAL_CATEGORIES = frozenset({PROJECTION_CATEGORY, PROCESS_CATEGORY})


def split_stream(stream: str) -> tuple[str, str]:
    """`NoteBook@mine` -> ("NoteBook", "mine")."""
    category, _, ident = stream.partition(CATEGORY_SEPARATOR)
    return category, ident


def is_internal(stream: str) -> bool:
    """True for the store's system streams and this library's own streams."""
    if is_system(stream):
        return True
    category = category_of(stream)
    return category in INTERNAL_CATEGORIES or category.endswith(SNAPSHOT_SUFFIX)


def projection_stream(name: str) -> str:
    return f"{PROJECTION_CATEGORY}{CATEGORY_SEPARATOR}{name}"


def process_stream(name: str) -> str:
    return f"{PROCESS_CATEGORY}{CATEGORY_SEPARATOR}{name}"


def snapshot_stream(stream: str) -> str:
    category, ident = split_stream(stream)
    return f"{category}{SNAPSHOT_SUFFIX}{CATEGORY_SEPARATOR}{ident}"
