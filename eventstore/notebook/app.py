"""The NoteBook application: commands in, the index projection out.

    app = await NoteBookApp.open(EventStore(client))
    await app.new("groceries")
    await app.add("groceries", "milk")
    notebook = await app.show("groceries")        # the write model: its own stream
    index = await app.refresh()                    # fold new events into the saved index
    index = await app.index()                      # ... or just read it, from any machine

`show` reads the notebook's stream (through its latest snapshot), so it is always current.
`index` reads the projection saved in the network: as current as the last agent run -
`refresh` brings it up to date, and the CLI refreshes after every change.
"""

from __future__ import annotations

from eventstore.cqrs import (
    CommandHandler,
    CommandResult,
    ProjectionAgent,
    ProjectionState,
    Repository,
    Snapshots,
    projection_history,
    read_projection,
)
from eventstore.database import Database
from eventstore.errors import DatabaseExists, DatabaseNotFound
from eventstore.store import EventStore

from .domain import AddNote, CreateNoteBook, NoSuchNoteBook, NoteBook
from .index import INDEX_NAME, NOTEBOOK_INDEX

DATABASE = "notebooks"
SNAPSHOT_EVERY = 20


class NoteBookApp:
    def __init__(self, db: Database, *, snapshot_every: int = SNAPSHOT_EVERY, save_every: int = 100) -> None:
        self.db = db
        self.repository = Repository(db, snapshots=Snapshots(db, every=snapshot_every))
        self.commands = CommandHandler(self.repository)
        self.agent = ProjectionAgent(db, [NOTEBOOK_INDEX], save_every=save_every)

    @classmethod
    async def open(cls, store: EventStore, database: str = DATABASE, **kwargs: int) -> NoteBookApp:
        """The app on `database`, created on first use."""
        try:
            db = await store.database(database).open()
        except DatabaseNotFound:
            try:
                db = await store.create_database(database)
            except DatabaseExists:  # another process made it just now
                db = await store.database(database).open()
        return cls(db, **kwargs)

    async def new(self, name: str) -> CommandResult:
        """Create notebook `name` (NoteBookExists if it is taken)."""
        return await self.commands.execute(CreateNoteBook(name))

    async def add(self, name: str, text: str) -> CommandResult:
        """Add a note (InvalidNote if empty or 100+ characters; `changed` is False for a
        note the notebook already holds)."""
        return await self.commands.execute(AddNote(name, text))

    async def show(self, name: str) -> NoteBook:
        notebook = await self.repository.load(NoteBook, name)
        if not notebook.created:
            raise NoSuchNoteBook(name)
        return notebook

    async def refresh(self) -> ProjectionState:
        """Bring the saved index up to date with the log and return it."""
        return (await self.agent.catch_up(INDEX_NAME))[INDEX_NAME]

    async def index(self) -> ProjectionState | None:
        """The index as last saved in the network (None if never saved)."""
        return await read_projection(self.db, INDEX_NAME)

    async def index_history(self) -> list[ProjectionState]:
        """Every saved state of the index, oldest first."""
        return await projection_history(self.db, INDEX_NAME)

    async def rebuild_index(self) -> ProjectionState:
        return await self.agent.rebuild(INDEX_NAME)
