"""The NoteBook (eventstore.notebook) under chaos: notebooks created and notes added by
three clients at once while nodes die, with the notebook index projected back into the
network by an agent that is itself killed again and again.

    safenet chaos run app --app examples.notebook:app --seeds 1..20
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from eventstore.notebook import NOTEBOOK_INDEX, AddNote, CreateNoteBook, NoteBook
from simulations.app_spec import ChaosApp, FinalState

NOTEBOOKS = ("groceries", "todo", "ideas")
WORDS = ("milk", "eggs", "bread", "call mum", "fix the bike", "read", "tea", "jam", "plan trip", "water plants")


def commands(rng: random.Random) -> Iterator[AddNote | CreateNoteBook]:
    """Mostly notes (a word drawn from a small set, so repeats - which the notebook
    ignores - are common), now and then a new notebook."""
    made = 0
    while True:
        if rng.random() < 0.05:
            made += 1
            yield CreateNoteBook(f"extra{made}")
        else:
            yield AddNote(rng.choice(NOTEBOOKS), f"{rng.choice(WORDS)} {rng.randint(1, 6)}")


def no_note_twice(final: FinalState) -> list[str]:
    """A notebook never holds the same note twice."""
    return [f"{name} holds {note!r} {book.notes.count(note)} times"
            for name, book in final.aggregates(NoteBook).items() for note in set(book.notes)
            if book.notes.count(note) > 1]


def index_counts_every_note(final: FinalState) -> list[str]:
    """The saved index counts as many notes per notebook as the notebook holds."""
    saved = final.projections.get(NOTEBOOK_INDEX.name)
    if saved is None:
        return []  # a prefix of the log: no index to compare
    index = saved.get("notebooks", {})
    wrong = []
    for name, book in final.aggregates(NoteBook).items():
        if not book.created:
            continue
        entry = index.get(name)
        if entry is None or entry["notes"] != len(book.notes):
            wrong.append(f"{name}: the index says {entry and entry['notes']} notes, the notebook has {len(book.notes)}")
    return wrong


def app() -> ChaosApp:
    return ChaosApp(
        "notebook",
        commands=commands,
        setup=[CreateNoteBook(name) for name in NOTEBOOKS],
        projections=[NOTEBOOK_INDEX],
        aggregates=[NoteBook],
        invariants=[no_note_twice, index_counts_every_note],
    )
