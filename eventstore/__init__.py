"""The event store on SAFE data, the CQRS/DDD library, the NoteBook example and the web UI.

The event store (docs/eventstore.md; its public API is `eventstore.api`):

    from eventstore.api import EventStore, EventData, NO_STREAM
    store = EventStore(client)       # client: MockNetwork().client(), or a NetworkClient
    db = await store.create_database("shop")
    await db.append("order@42", [EventData("Placed", {"sku": 7})], expected_version=NO_STREAM)
    events = await db.read_stream("order@42")
"""
