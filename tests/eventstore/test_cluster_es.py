"""The event store on a real 8-node cluster of processes: concurrent writers with exact
expected versions, and a writer process killed (SIGKILL) in the middle of its appends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import trio
from es_testing import check_consistent, ev

from client.network import NetworkClient
from eventstore.api import EventStore, WrongExpectedVersion
from node.keys import Keypair

pytestmark = pytest.mark.cluster


async def test_twenty_writers_with_exact_versions_on_one_stream(healthy_cluster):
    addresses = healthy_cluster.addresses()
    keys = Keypair()
    async with NetworkClient.open(addresses, keys) as client:
        db = await EventStore(client).create_database(f"race{os.getpid()}")
    acknowledged: dict[object, int] = {}
    losers = 0

    async def writer(w: int) -> None:
        nonlocal losers
        async with NetworkClient.open(addresses, keys) as client:
            mine = EventStore(client).database(db.name)
            for i in range(2):
                while True:
                    version = await mine.stream_version("hot@1")
                    event = ev(w=w, i=i)
                    try:
                        result = await mine.append("hot@1", [event], expected_version=version)
                    except WrongExpectedVersion as exc:
                        assert exc.actual is not None and exc.actual >= version
                        losers += 1
                        continue
                    acknowledged[event.id] = result.next_expected_version
                    break

    with trio.fail_after(240):
        async with trio.open_nursery() as nursery:
            for w in range(20):
                nursery.start_soon(writer, w)
    async with NetworkClient.open(addresses, keys) as client:
        db = EventStore(client).database(db.name)
        events = await db.read_stream("hot@1")
        versions = [e.version for e in events]
        assert versions == list(range(40)), "no two events share a sequence number, none is missing"
        assert {e.id: e.version for e in events} == acknowledged
        assert len(await check_consistent(db)) == 40
    assert losers > 0  # they really raced
    print(f"\n[es] 20 writers x 2 events on one stream: {losers} WrongExpectedVersion retries")


WRITER = textwrap.dedent("""
    import sys, trio
    from client.network import NetworkClient
    from eventstore.api import EventStore, EventData
    from node.keys import Keypair

    async def main(seed, db_name, *addresses):
        async with NetworkClient.open(list(addresses), Keypair(bytes.fromhex(seed))) as client:
            db = EventStore(client).database(db_name)
            for n in range(1, 10_000):
                await db.append(f"acct@{n % 3}", [EventData("Deposited", {"n": n})])
                print(n, flush=True)

    trio.run(main, *sys.argv[1:])
""")


async def test_a_writer_killed_mid_appends_leaves_the_database_consistent(healthy_cluster, tmp_path):
    addresses = healthy_cluster.addresses()
    keys = Keypair()
    name = f"kill{os.getpid()}"
    async with NetworkClient.open(addresses, keys) as client:
        await EventStore(client).create_database(name)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), keys.seed.hex(), name, *addresses],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    acked = []
    try:
        with trio.fail_after(120):
            while len(acked) < 25:
                line = await trio.to_thread.run_sync(proc.stdout.readline)
                assert line, "the writer died on its own"
                acked.append(int(line))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    async with NetworkClient.open(addresses, keys) as client:
        db = EventStore(client, pending_grace=1.0).database(name)
        await db.append("acct@0", [ev(n="after")])  # the next writer runs
        log = await check_consistent(db)  # the log and the streams agree
        logged = {e.data["n"] for e in log}
        assert set(acked) <= logged, "every acknowledged append is in the log"
        assert "after" in logged
