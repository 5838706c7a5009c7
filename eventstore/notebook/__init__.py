"""The NoteBook example (SAFE.EventStore's test app): notebooks of short notes, kept as
event streams, with a notebook index projected back into the network.

    safenet notebook demo                 # on ./.safenet's cluster: new, add, show, list
    safenet notebook new groceries
    safenet notebook add groceries "milk"
    safenet notebook list
    safenet notebook show groceries
"""

from .app import DATABASE, NoteBookApp
from .domain import (
    AddNote,
    CreateNoteBook,
    InvalidName,
    InvalidNote,
    NoSuchNoteBook,
    NoteAdded,
    NoteBook,
    NoteBookCreated,
    NoteBookExists,
)
from .index import INDEX_NAME, NOTEBOOK_INDEX

__all__ = [
    "DATABASE",
    "INDEX_NAME",
    "NOTEBOOK_INDEX",
    "AddNote",
    "CreateNoteBook",
    "InvalidName",
    "InvalidNote",
    "NoSuchNoteBook",
    "NoteAdded",
    "NoteBook",
    "NoteBookApp",
    "NoteBookCreated",
    "NoteBookExists",
]
