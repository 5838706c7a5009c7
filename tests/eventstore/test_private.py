"""Private databases: the network holds nothing readable of them."""

from __future__ import annotations

from eventstore.api import EventData, EventStore, StreamMetadata
from eventstore.database import BLOB_MIN
from node.keys import Keypair

MARK = "zebra-unicorn"


async def test_nothing_readable_reaches_the_network(net, store, make_store, autojump_clock):
    db = await store.create_database(f"{MARK}-db", private=True)
    stream = f"{MARK}cat@{MARK}id"
    await db.append(stream, [
        EventData(f"{MARK}Type", {"secret": MARK}, metadata={"who": MARK}),
        EventData("Blob", (MARK * 400).encode(), metadata={"long": MARK * 300}),
    ])
    await db.append(stream, [EventData("Big", {"n": i, "s": MARK}) for i in range(60)])  # intent in a blob
    await db.set_stream_metadata(stream, db_meta())
    await db.restructure(stream, 0, {"secret": MARK + "2"})
    marker = MARK.encode()
    for value in net.chunks.values():
        assert marker not in value
    for state in net.mdata.values():
        if state.md is None:
            continue
        for key, entry in state.md.entries.items():
            assert marker not in key and marker not in entry.content
    # The same app elsewhere opens it with the key from its container; others cannot.
    again = make_store().database(f"{MARK}-db")
    events = await again.read_stream(stream)
    assert events[0].data == {"secret": MARK + "2"} and events[0].type == f"{MARK}Type"
    assert events[1].metadata == {"long": MARK * 300}
    assert await again.categories() == [f"{MARK}cat"]
    assert await again.list_streams(f"{MARK}cat") == [stream]
    assert len(await again.read_all()) == 64
    assert await EventStore(net.client(Keypair(b"\x0c" * 32))).databases() == []


async def test_equal_payloads_still_deduplicate(net, store, autojump_clock):
    public = await store.create_database("public")
    private = await store.create_database("private", private=True)
    big = {"same": "x" * BLOB_MIN}  # large payloads keep a blob of their own, deduplicated
    for db in (public, private):
        before = len(net.chunks)
        await db.append("s@1", [EventData("T", big)])
        first = len(net.chunks) - before
        assert first >= 1
        await db.append("s@2", [EventData("T", big)])
        assert len(net.chunks) - before == first  # the second event stored no chunk
        before = len(net.chunks)
        await db.append("s@3", [EventData("T", {"same": 1})])
        assert len(net.chunks) == before  # a small payload sits in its record


def db_meta() -> StreamMetadata:
    return StreamMetadata(max_count=100, custom={"tag": MARK})
