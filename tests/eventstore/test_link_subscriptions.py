"""Catch-up subscriptions to `$ce-<category>` through the `$by_category` links: the category's
events in log order, each once, whether the projection is ahead, behind or never ran, while
it runs at random moments between appends; resuming from a checkpoint; `es subscribe DB
'$ce-order'` on a mock file."""

from __future__ import annotations

import json
import random

import pytest
import trio
from click.testing import CliRunner

from eventstore.api import EventData, EventStore
from eventstore.cli import es
from eventstore.events import category_of, is_system
from eventstore.system_projections import SystemProjections


async def expected(db, category: str) -> list[tuple[str, int]]:
    """What the projection links: the category's events (not the store's `$` ones), log order."""
    return [(e.stream, e.version) for e in await db.read_all()
            if category_of(e.stream) == category and not is_system(e.type) and not is_system(e.stream)]


async def take(sub, n: int) -> list:
    out = []
    with trio.fail_after(60):
        while len(out) < n:
            out.append(await sub.__anext__())
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_links_and_the_log_merge_without_gap_or_repeat(db, seed, autojump_clock):
    rng = random.Random(seed)
    agent = SystemProjections(db)
    sub = db.subscribe_to_category("order", through_links=True)
    got: list = []
    readings = set()
    for step in range(40):
        action = rng.random()
        if action < 0.55:
            await db.append(f"{rng.choice(['order', 'cart'])}@{rng.randrange(4)}",
                            [EventData("Added", {"step": step})] * 1)
        elif action < 0.65:
            stream = f"order@{rng.randrange(4)}"
            if await db.stream_version(stream) >= 0:
                await db.restructure(stream, 0, {"fixed": step})  # a `$correction`: never linked
        elif action < 0.8:
            await agent.catch_up()
        else:
            want = await expected(db, "order")
            got += await take(sub, len(want) - len(got))
            readings.add(sub.reading.split(" ")[0])
    want = await expected(db, "order")
    got += await take(sub, len(want) - len(got))
    assert [(e.stream, e.version) for e in got] == want
    assert [e.position for e in got] == sorted({e.position for e in got})
    assert all(e.type == "Added" for e in got)
    # From a checkpoint in the middle: the rest, exactly.
    middle = got[len(got) // 2]
    rest = db.subscribe_to_category("order", middle.position, through_links=True)
    assert [e.position for e in await take(rest, len(got) - len(got) // 2 - 1)] == \
        [e.position for e in got[len(got) // 2 + 1:]]


async def test_it_reads_links_once_the_projection_ran_and_says_so(db, autojump_clock):
    for i in range(6):
        await db.append(f"order@{i % 2}", [EventData("Placed", {"i": i})])
    sub = db.subscribe_to_category("order", through_links=True)
    await take(sub, 1)
    assert sub.reading.startswith("the log from position") and "no links yet" in sub.reading
    await SystemProjections(db).catch_up()
    fresh = db.subscribe_to_category("order", through_links=True)
    events = await take(fresh, 6)
    assert fresh.reading == "links of $ce-order" and all(e.link is not None for e in events)
    await db.append("order@9", [EventData("Placed", {"i": 6})])  # not linked yet: from the log
    [late] = await take(fresh, 1)
    assert late.link is None and fresh.reading.startswith("the log from position")
    assert "links end at position" in fresh.reading


def test_es_subscribe_to_ce_on_a_mock_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    monkeypatch.delenv("SAFENET_APP", raising=False)
    mock = str(tmp_path / "net.mock")
    runner = CliRunner()

    def run(*args: str) -> tuple[int, str]:
        result = runner.invoke(es, [*args, "--mock", mock])
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    assert run("db", "create", "shop")[0] == 0
    for i, stream in enumerate(["order@1", "cart@1", "order@2"]):
        assert run("append", "shop", stream, "--type", "Placed", "--data", str(i))[0] == 0
    assert run("projections", "run", "shop", "--once")[0] == 0
    assert run("append", "shop", "order@1", "--type", "Paid", "--data", "3")[0] == 0
    code, out = run("subscribe", "shop", "$ce-order", "--count", "3", "--json")
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(e["stream"], e["data"]) for e in lines] == [("order@1", 0), ("order@2", 2), ("order@1", 3)]
    assert "link" in lines[0] and "link" not in lines[2]
    assert "subscribe: reading links of $ce-order" in out and "subscribe: reading the log from" in out
    code, out = run("subscribe", "shop", "$ce-order", "--from", str(lines[1]["position"]), "--count", "1", "--json")
    assert json.loads(out.splitlines()[-1])["data"] == 3
    assert run("subscribe", "shop", "$ce-", "--count", "1")[0] == 2
    assert run("subscribe", "shop", "order@1", "--stream", "order@1")[0] == 2
    code, out = run("subscribe", "shop", "$all", "--count", "4", "--json")
    assert code == 0 and len([line for line in out.splitlines() if line.startswith("{")]) == 4


async def test_a_store_with_another_key_reads_the_links_too(net, db, autojump_clock):
    await db.append("order@1", [EventData("Placed", {})])
    await SystemProjections(db).catch_up()
    reader = await EventStore(net.client()).add_database(db.info)
    sub = reader.subscribe_to_category("order", through_links=True)
    [event] = await take(sub, 1)
    assert event.stream == "order@1" and sub.reading == "links of $ce-order"
