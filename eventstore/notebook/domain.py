"""The NoteBook domain, as SAFE.EventStore's example had it: a notebook is created, then
notes are added. A note must be non-empty and shorter than 100 characters; a note the
notebook already holds is ignored (the command succeeds and changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventstore.cqrs import Aggregate, Command, DomainError, DomainEvent, applies
from eventstore.events import MAX_STREAM_NAME

MAX_NOTE = 99  # characters: "shorter than 100"
MAX_NAME = 64


class InvalidNote(DomainError):
    """The note is empty (or only spaces) or 100 characters or longer."""


class InvalidName(DomainError):
    """A notebook name is 1 to 64 printable characters."""


class NoteBookExists(DomainError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"notebook {name!r} already exists")


class NoSuchNoteBook(DomainError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"no notebook {name!r} (create it with `safenet notebook new {name}`)")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidName(f"a notebook name is 1 to {MAX_NAME} printable characters, got {name!r:.80}")
    assert len(NoteBook.stream_for(name)) <= MAX_STREAM_NAME
    return name


def check_note(text: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InvalidNote("a note must not be empty")
    if len(text) > MAX_NOTE:
        raise InvalidNote(f"a note must be shorter than 100 characters (this one has {len(text)})")
    return text


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class NoteBookCreated(DomainEvent):
    name: str


@dataclass(frozen=True)
class NoteAdded(DomainEvent):
    note: str


# ----------------------------------------------------------------------------- aggregate


class NoteBook(Aggregate):
    """A notebook: `NoteBook@NAME` in the store."""

    def __init__(self, id: str) -> None:
        super().__init__(id)
        self.name = id
        self.created = False
        self.notes: list[str] = []

    def create(self) -> None:
        if self.created:
            raise NoteBookExists(self.id)
        check_name(self.id)
        self.raise_event(NoteBookCreated(self.id))

    def add_note(self, text: str) -> bool:
        """Add a note; False (and no event) if the notebook already holds it."""
        if not self.created:
            raise NoSuchNoteBook(self.id)
        check_note(text)
        if text in self.notes:
            return False
        self.raise_event(NoteAdded(text))
        return True

    @applies(NoteBookCreated)
    def _created(self, event: NoteBookCreated) -> None:
        self.name, self.created = event.name, True

    @applies(NoteAdded)
    def _added(self, event: NoteAdded) -> None:
        self.notes.append(event.note)


# ----------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class CreateNoteBook(Command):
    aggregate = NoteBook
    notebook: str

    def target(self) -> str:
        return check_name(self.notebook)

    def handle(self, notebook: NoteBook) -> None:
        notebook.create()


@dataclass(frozen=True)
class AddNote(Command):
    aggregate = NoteBook
    notebook: str
    text: str

    def target(self) -> str:
        return check_name(self.notebook)

    def handle(self, notebook: NoteBook) -> None:
        notebook.add_note(self.text)
