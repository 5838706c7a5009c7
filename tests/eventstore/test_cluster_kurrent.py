"""KurrentDB's features on a real 8-node cluster of processes: two competing consumer
processes of a persistent subscription, one SIGKILLed mid-event; parking and replay; the
restructure / max_count case; and the CLI verbs against the cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio
from click.testing import CliRunner

from client.network import NetworkClient
from eventstore.api import EventData, EventStore, StreamMetadata
from eventstore.cli import es
from eventstore.persistent import PersistentSettings
from eventstore.system_projections import SystemProjections
from node.keys import Keypair

pytestmark = pytest.mark.cluster

CONSUMER = textwrap.dedent("""
    import sys, trio
    from client.network import NetworkClient
    from eventstore.api import EventStore
    from node.keys import Keypair

    async def main(seed, db_name, name, stall_at, *addresses):
        async with NetworkClient.open(list(addresses), Keypair(bytes.fromhex(seed))) as client:
            db = EventStore(client, poll_interval=0.1).database(db_name)
            sub = db.persistent.subscribe("$ce-job", "workers", name, buffer_size=2)
            n = 0
            async for message in sub:
                n += 1
                i = message.event.data["i"]
                if n == int(stall_at):
                    print("stalled", i, flush=True)
                    await trio.sleep_forever()  # mid-event: killed here
                await trio.sleep(0.05)  # the work
                await sub.ack(message)
                print("acked", i, flush=True)

    trio.run(main, *sys.argv[1:])
""")


async def test_competing_consumer_processes_one_killed_mid_event(healthy_cluster, tmp_path):
    addresses = healthy_cluster.addresses()
    keys = Keypair()
    name = f"ps{os.getpid()}"
    async with NetworkClient.open(addresses, keys) as client:
        db = await EventStore(client).create_database(name)
        for i in range(12):
            await db.append(f"job@{i % 3}", [EventData("Run", {"i": i})])
        await db.persistent.create("$ce-job", "workers", PersistentSettings(start_from="start", message_timeout=3))
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)

    def start(who: str, stall_at: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, str(script), keys.seed.hex(), name, who, str(stall_at), *addresses],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})

    acked: list[int] = []
    stalled: list[int] = []
    # a claims two events at once (its buffer), acks the first and stalls on the second;
    # b joins once a is at work, and must get a's stalled event after the timeout.
    a = start("a", 2)
    b: subprocess.Popen[str] | None = None

    async def watch(proc: subprocess.Popen[str], kill_on_stall: bool) -> None:
        while True:
            line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)  # type: ignore[union-attr]
            if not line:
                return
            word, i = line.split()
            if word == "stalled":
                stalled.append(int(i))
                if kill_on_stall:
                    proc.send_signal(signal.SIGKILL)
            else:
                acked.append(int(i))

    try:
        with trio.move_on_after(150):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, a, True)
                while not acked:
                    await trio.sleep(0.1)
                b = start("b", 10_000)
                nursery.start_soon(watch, b, False)
                while len(acked) < 12:
                    await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
    finally:
        for proc in (a, b):
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
    print(f"\n[es] competing consumers: acked {sorted(acked)}, a stalled at {stalled}")
    assert stalled, "consumer a never got its third event"
    assert sorted(acked) == list(range(12)), "none lost, none handled twice"
    assert stalled[0] in acked  # the killed consumer's event was handled by the other
    async with NetworkClient.open(addresses, keys) as client:
        info = await EventStore(client).database(name).persistent.info("$ce-job", "workers")
        assert (info.acked, info.in_flight, info.lag) == (12, 0, 0)


async def test_restructure_and_max_count_on_the_cluster(healthy_cluster):
    async with NetworkClient.open(healthy_cluster.addresses(), Keypair()) as client:
        db = await EventStore(client).create_database(f"fix{os.getpid()}")
        await db.append("doc@1", [EventData("Wrote", {"t": "helo"})])
        await db.set_stream_metadata("doc@1", StreamMetadata(max_count=1))
        await db.restructure("doc@1", 0, {"t": "hello"})
        [event] = await db.read_stream("doc@1")
        assert (event.version, event.data, event.corrected_by) == (0, {"t": "hello"}, 1)
        await db.append("doc@1", [EventData("Wrote", {"t": "next"})], expected_version=1)
        assert [e.data["t"] for e in await db.read_stream("doc@1")] == ["next"]


def test_cli_verbs_on_the_cluster(healthy_cluster, tmp_path, monkeypatch):
    monkeypatch.setenv("SAFENET_CLIENT_KEY", str(tmp_path / "client.key"))
    runner = CliRunner()
    where = ["--cluster", str(healthy_cluster.lc.data_dir)]

    def run(*args: str, input: bytes | None = None) -> tuple[int, str]:
        result = runner.invoke(es, [*args, *where], input=input)
        assert "Traceback" not in result.output, result.output
        return result.exit_code, result.output

    db = f"cli{os.getpid()}"
    assert run("db", "create", db)[0] == 0
    payload = tmp_path / "e.json"
    payload.write_text('{"t": "a"}')
    assert run("append", db, "doc@1", "--type", "T", "--data", f"@{payload}")[0] == 0
    assert run("append", db, "doc@1", "--type", "T", "--data", "-", input=b'{"t": "b"}')[0] == 0
    assert run("restructure", db, "doc@1", "0", "--data", '{"t": "A"}')[0] == 0
    assert run("metadata", "set", db, "doc@1", "--max-count", "2")[0] == 0
    assert json.loads(run("metadata", "get", db, "doc@1", "--json")[1])["max_count"] == 2
    code, out = run("read", db, "doc@1", "--json")
    assert [e["data"]["t"] for e in json.loads(out)] == ["A", "b"]
    code, out = run("read-category", db, "doc", "--json")
    assert len(json.loads(out)) == 3
    code, out = run("subscribe", db, "--stream", "doc@1", "--count", "1", "--json")
    assert json.loads(out)["version"] == 0
    assert run("persistent", "create", db, "doc@1", "g", "--from", "start")[0] == 0
    code, out = run("persistent", "consume", db, "doc@1", "g", "--count", "1", "--nack", "park", "--json")
    assert json.loads(out)["version"] == 0
    assert json.loads(run("persistent", "info", db, "doc@1", "g", "--json")[1])["parked"] == 1
    assert run("persistent", "replay-parked", db, "doc@1", "g")[0] == 0
    code, out = run("persistent", "consume", db, "doc@1", "g", "--count", "2", "--json")  # not the correction
    assert sorted(json.loads(line)["version"] for line in out.splitlines()) == [0, 1]
    assert run("delete", db, "doc@1", "--hard")[0] == 0
    assert run("read", db, "doc@1")[0] == 4


AGENT = textwrap.dedent("""
    import sys, trio
    from client.network import NetworkClient
    from eventstore.api import EventStore
    from eventstore.system_projections import SystemProjections
    from node.keys import Keypair

    async def main(seed, db_name, *addresses):
        async with NetworkClient.open(list(addresses), Keypair(bytes.fromhex(seed))) as client:
            db = EventStore(client, poll_interval=0.1).database(db_name)
            agent = SystemProjections(db)
            original = agent._append_links

            async def noisy(target, events):
                n = await original(target, events)
                print("linked", target, n, flush=True)
                return n

            agent._append_links = noisy
            await agent.run()

    trio.run(main, *sys.argv[1:])
""")


async def test_system_projections_through_an_agent_killed_and_restarted(healthy_cluster, tmp_path):
    addresses = healthy_cluster.addresses()
    keys = Keypair()
    name = f"sp{os.getpid()}"
    async with NetworkClient.open(addresses, keys) as client:
        db = await EventStore(client).create_database(name)
        for i in range(18):
            await db.append(f"{('order', 'cart')[i % 2]}@{i % 5}", [EventData(("Added", "Paid")[i % 3 == 0], {"i": i})])
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    proc = subprocess.Popen([sys.executable, str(script), keys.seed.hex(), name, *addresses], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        with trio.fail_after(120):
            line = await trio.to_thread.run_sync(proc.stdout.readline, abandon_on_cancel=True)  # type: ignore[union-attr]
            assert line.startswith("linked"), line
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-page: some link streams written, others not
        proc.wait()
    async with NetworkClient.open(addresses, keys) as client:
        db = EventStore(client, pending_grace=1.0).database(name)
        for i in range(18, 22):
            await db.append(f"order@{i % 5}", [EventData("Added", {"i": i})])
        await SystemProjections(db).catch_up()  # the next agent goes on
        log = [e for e in await db.read_all() if not e.stream.startswith("$")]
        for category in ("order", "cart"):
            links = await db.read_stream(f"$ce-{category}", resolve_links=True)
            assert [e.id for e in links] == [e.id for e in log if e.category == category]
        for kind in ("Added", "Paid"):
            links = await db.read_stream(f"$et-{kind}", resolve_links=True)
            assert [e.id for e in links] == [e.id for e in log if e.type == kind]
        assert [e.id for e in await db.read_category("order")] == [e.id for e in log if e.category == "order"]
        assert "links of $ce-order" in db.last_category_read
