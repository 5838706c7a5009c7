"""A projection agent in its own OS process, SIGKILLed mid-run and started again, ends
with the same saved state as an uninterrupted fold - no event counted twice. The agent is
`safenet notebook agent` on a mock network kept in a file (the file is what the processes
share, under a lock, as they would share a cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from client.connect import FileMockNetwork
from client.mock import MockNetwork
from eventstore.api import EventStore
from eventstore.cqrs import Projection, ProjectionAgent, projection_history, read_projection
from eventstore.notebook import NoteBookApp
from eventstore.notebook.index import fold
from node.keys import Keypair

NOTES = 150
AGENT = [sys.executable, "-c", "import sys; from eventstore.notebook.cli import notebook; notebook(sys.argv[1:])"]
ROOT = Path(__file__).resolve().parents[2]


def _store(path: Path, keys: Keypair) -> EventStore:
    return EventStore(FileMockNetwork(path).client(keys), poll_interval=0.02)


def test_a_sigkilled_agent_resumes_to_the_uninterrupted_state(tmp_path):
    keys = Keypair(b"\x0d" * 32)
    key_file = tmp_path / "client.key"
    key_file.write_bytes(keys.seed)
    path = tmp_path / "net.mock"

    async def fill() -> None:  # in memory, written to the file once at the end
        net = MockNetwork()
        app = await NoteBookApp.open(EventStore(net.client(keys)))
        await app.new("big")
        for i in range(NOTES):
            await app.add("big", f"note {i}")
        net.path = path
        net._save()

    trio.run(fill)
    env = {**os.environ, "SAFENET_CLIENT_KEY": str(key_file), "PYTHONPATH": str(ROOT)}
    agent = subprocess.Popen([*AGENT, "agent", "--mock", str(path), "--save-every", "3"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def saved_events() -> int:
        db = await _store(path, keys).database("notebooks").open()
        current = await read_projection(db, "notebooks")
        return 0 if current is None else current.events

    killed_at = None
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and agent.poll() is None:
            events = trio.run(saved_events)
            if 10 <= events < NOTES:  # mid-run: some saves in, more to come
                os.kill(agent.pid, signal.SIGKILL)
                killed_at = events
                break
            time.sleep(0.01)
    finally:
        if agent.poll() is None and killed_at is None:
            agent.kill()
        agent.wait(timeout=30)
    assert killed_at is not None, f"the agent was not caught mid-run: {agent.returncode}, {agent.stderr.read()!r}"
    assert agent.returncode == -signal.SIGKILL

    again = subprocess.run([*AGENT, "agent", "--mock", str(path), "--save-every", "3"], env=env,
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr

    async def compare() -> None:
        db = await _store(path, keys).database("notebooks").open()
        resumed = await read_projection(db, "notebooks")
        reference = Projection("reference", fold, initial={"notebooks": {}}, categories=["NoteBook"])
        expected = (await ProjectionAgent(db, [reference]).catch_up())["reference"]
        assert resumed is not None
        assert resumed.state == expected.state
        assert resumed.state["notebooks"]["big"]["notes"] == NOTES  # not one counted twice
        assert (resumed.events, resumed.checkpoint) == (expected.events, expected.checkpoint)
        assert resumed.events == NOTES + 1  # the notebook's creation and its notes
        history = await projection_history(db, "notebooks")
        counts = [h.state["notebooks"].get("big", {}).get("notes", 0) for h in history]
        assert counts == sorted(counts) and counts[-1] == NOTES
        assert any(h.events == killed_at for h in history)  # the resumed run went on from the kill

    trio.run(compare)
