"""A writer process killed with SIGKILL in the middle of its appends (the mock network in a
file, saved after every mutation, so the kill lands between any two of them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import trio
from es_testing import check_consistent, ev

from client.connect import FileMockNetwork
from eventstore.api import EventStore
from node.keys import Keypair

WRITER = textwrap.dedent("""
    import json, sys, trio
    from pathlib import Path
    from eventstore.api import EventData, EventStore
    from client.connect import FileMockNetwork
    from node.keys import Keypair

    async def main(path, key):
        db = EventStore(FileMockNetwork(path).client(Keypair.load_or_create(Path(key)))).database("shop")
        for i in range(10_000):
            first = EventData("Deposited", {"i": i})
            result = await db.append(f"acct@{i % 4}", [first, EventData("Noted", {"i": i})])
            print(json.dumps([str(first.id), result.next_expected_version - 1]), flush=True)

    trio.run(main, *sys.argv[1:])
""")


def test_a_sigkilled_writer_leaves_the_database_consistent_after_the_next_writer(tmp_path: Path):
    path, key = tmp_path / "net.mock", tmp_path / "app.key"

    async def create() -> None:
        store = EventStore(FileMockNetwork(path).client(Keypair.load_or_create(key)))
        await store.create_database("shop")

    trio.run(create)
    root = str(Path(__file__).resolve().parents[2])
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(key)], stdout=subprocess.PIPE,
                              text=True, cwd=root, env={**os.environ, "PYTHONPATH": root})
    acknowledged = {}
    try:
        assert writer.stdout is not None
        for line in writer.stdout:
            event_id, version = json.loads(line)
            acknowledged[event_id] = version
            if len(acknowledged) >= 12:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert writer.returncode == -signal.SIGKILL

    async def next_writer() -> None:
        store = EventStore(FileMockNetwork(path).client(Keypair.load_or_create(key)), pending_grace=0.0)
        db = store.database("shop")
        for i in range(4):
            await db.append(f"acct@{i}", [ev(after=True)])
        log = await check_consistent(db)
        logged = {str(e.id): e.version for e in log}
        for event_id, version in acknowledged.items():
            assert logged[event_id] == version
        for i in range(4):
            events = await db.read_stream(f"acct@{i}")
            kinds = [e.type for e in events[:-1]]
            assert kinds == ["Deposited", "Noted"] * (len(kinds) // 2)  # whole appends only

    trio.run(next_writer)
