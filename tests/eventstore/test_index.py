"""Listings: databases, categories and stream keys — far beyond one MD's 1,000 entries."""

from __future__ import annotations

import trio
from es_testing import ev

from eventstore.api import NO_STREAM
from eventstore.safe import IndexSet
from node.rules import MAX_MDATA_ENTRIES


async def test_a_category_of_2500_streams_lists_completely(db, autojump_clock):
    names = [f"device@{i:05d}" for i in range(2500)]

    async def writer(k: int) -> None:
        for name in names[k::25]:
            await db.append(name, [ev(k=k)], expected_version=NO_STREAM)

    async with trio.open_nursery() as nursery:
        for k in range(25):
            nursery.start_soon(writer, k)
    await db.append("other@1", [ev()])
    assert await db.categories() == ["device", "other"]
    assert await db.list_streams("device") == names
    seen = [name async for name in db.streams("device")]
    assert sorted(seen) == names and len(seen) == len(set(seen))


async def test_index_segments_chain_when_a_partition_fills(db, store, autojump_clock):
    index = IndexSet(store.data, db.sealer, lambda p, s: db.layout.stream_index("chain", p, s), 1)
    names = [f"chain@{i}" for i in range(MAX_MDATA_ENTRIES + 5)]
    for name in names:
        assert await index.add(name)
    assert not await index.add(names[0]) and not await index.add(names[-1])
    fresh = IndexSet(store.data, db.sealer, lambda p, s: db.layout.stream_index("chain", p, s), 1)
    assert not await fresh.add(names[1002])  # found in the second segment, not added again
    assert await fresh.all() == sorted(names)
    pages = [page async for page in fresh.pages()]
    assert [len(p) for p in pages] == [1000, 5]


async def test_racing_adders_never_duplicate(db, store, make_store, autojump_clock):
    def address(p: int, s: int):
        return db.layout.stream_index("race", p, s)

    stores = [make_store() for _ in range(6)]
    results: list[bool] = []

    async def adder(k: int) -> None:
        index = IndexSet(stores[k].data, db.sealer, address, 2)
        for i in range(40):
            results.append(await index.add(f"race@{i}"))

    async with trio.open_nursery() as nursery:
        for k in range(6):
            nursery.start_soon(adder, k)
    assert results.count(True) == 40
    assert await IndexSet(store.data, db.sealer, address, 2).all() == sorted(f"race@{i}" for i in range(40))


async def test_concurrent_adds_in_one_process_share_their_mutations(db, store, net, autojump_clock):
    def address(p: int, s: int):
        return db.layout.stream_index("burst", p, s)

    index = IndexSet(store.data, db.sealer, address, 1)
    assert await index.add("burst@0")
    net.set_delay(0.01)  # a mutation takes a while, so a batch forms behind it
    before = net.requests["mutate_entries"]
    results: dict[str, bool] = {}

    async def adder(name: str) -> None:
        results[name] = await index.add(name)

    names = [f"burst@{i}" for i in range(40)]  # burst@0 is there already
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(adder, name)
    assert results == {name: name != "burst@0" for name in names}
    # The first insert goes alone, the other 39 names wait behind it together: two
    # mutations and a retry of the batch without the name that clashed, not one per name.
    assert net.requests["mutate_entries"] - before <= 4
    assert await IndexSet(store.data, db.sealer, address, 1).all() == sorted(names)


async def test_a_batch_that_overfills_a_segment_goes_name_by_name(db, store, autojump_clock):
    def address(p: int, s: int):
        return db.layout.stream_index("brim", p, s)

    index = IndexSet(store.data, db.sealer, address, 1)
    first = [f"brim@{i}" for i in range(MAX_MDATA_ENTRIES - 3)]
    for name in first:
        assert await index.add(name)
    late = [f"late@{i}" for i in range(8)]  # 3 fit the first segment, 5 spill into the next
    results: list[bool] = []

    async def adder(name: str) -> None:
        results.append(await index.add(name))

    async with trio.open_nursery() as nursery:
        for name in late:
            nursery.start_soon(adder, name)
    assert results == [True] * 8
    pages = [page async for page in IndexSet(store.data, db.sealer, address, 1).pages()]
    assert [len(p) for p in pages] == [1000, 5]
    assert sorted(sum(pages, [])) == sorted(first + late)
