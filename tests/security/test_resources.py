"""Resource floods and a self-declared node, against real node processes on loopback.

The attacker here is a plain TCP socket saying whatever bytes it likes: no Endpoint, no
client library. Each attack is bounded in connections and in time, and every socket is closed
however the test ends. The cluster's nodes get a 2-second idle timeout (through the
environment, as an operator would set it) so that the idle attack is quick to watch.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import partial

import psutil
import pytest
import trio

from node.cluster import LocalCluster, NodeEntry
from node.keys import Keypair
from node.securelink import Ephemeral, secure_stream
from node.tools import open_tools
from node.transport import auth_payload, parse_address
from node.wire import FrameDecoder, encode_frame, new_message

IDLE_TIMEOUT = 2.0
START_TIMEOUT = 120.0
RSS_LIMIT = 150_000_000  # bytes: the bound issue 11 sets
FRAME = 3 * 1024 * 1024  # the whole frame, prefix included, is the node's frame limit
ATTACK_CONNECTIONS = 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    lc = LocalCluster(tmp_path_factory.mktemp("attacked"))
    saved = os.environ.get("SAFENET_IDLE_TIMEOUT")
    os.environ["SAFENET_IDLE_TIMEOUT"] = str(IDLE_TIMEOUT)  # inherited by the node processes
    try:
        trio.run(partial(lc.up, 4, replication=3, timeout=START_TIMEOUT))
        yield lc
    finally:
        if saved is None:
            os.environ.pop("SAFENET_IDLE_TIMEOUT", None)
        else:
            os.environ["SAFENET_IDLE_TIMEOUT"] = saved
        try:
            lc.down(timeout=10.0)
        finally:
            lc.kill_everything()


def target(lc: LocalCluster) -> tuple[NodeEntry, psutil.Process]:
    entry = lc.load().nodes[0]
    assert entry.pid is not None and lc.is_alive(entry)
    return entry, psutil.Process(entry.pid)


# ------------------------------------------------------------------------- the attacker


class Raw:
    """One attacker connection."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder()
        self.ready: list[dict] = []
        self.keys = Keypair()

    async def read(self) -> dict | None:
        while not self.ready:
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            self.ready.extend(self.decoder.feed(data))
        return self.ready.pop(0)

    async def handshake(self, role: str = "client", addr: str | None = None) -> bool:
        """Prove our key; False if the node hung up first (admission made room)."""
        nonce, eph = os.urandom(32), Ephemeral()
        hello = new_message(
            "hello", role=role, pk=bytes(self.keys.public), name=bytes(self.keys.name),
            nonce=nonce, eph=eph.public, addr=addr,
        )
        await self.stream.send_all(encode_frame(hello))
        theirs = await self.read()
        if theirs is None:
            return False
        assert theirs["k"] == "hello", theirs
        payload = auth_payload(theirs["nonce"], self.keys.public, theirs["pk"], role, addr,
                               eph.public, theirs["eph"])
        await self.stream.send_all(encode_frame(new_message("auth", sig=self.keys.sign(payload))))
        auth = await self.read()
        if auth is None:
            return False
        assert auth["k"] == "auth", auth
        # From here the link is sealed (node/securelink.py).
        self.stream = secure_stream(self.stream, eph, (nonce, bytes(self.keys.public), eph.public),
                                    (theirs["nonce"], theirs["pk"], theirs["eph"]), dialled=True)
        return True

    async def closed_within(self, seconds: float) -> bool:
        """True if the node hangs up within `seconds` (whatever it says first)."""
        with trio.move_on_after(seconds):
            while await self.read() is not None:
                pass
            return True
        return False


@asynccontextmanager
async def attackers() -> AsyncIterator[list[Raw]]:
    opened: list[Raw] = []
    try:
        yield opened
    finally:
        for raw in opened:
            await trio.aclose_forcefully(raw.stream)


async def connect(address: str, opened: list[Raw]) -> Raw:
    host, port = parse_address(address)
    raw = Raw(await trio.open_tcp_stream(host, port))
    opened.append(raw)
    return raw


class Watch:
    """Samples a process's resident memory while an attack runs."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc
        self.peak = proc.memory_info().rss

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await trio.sleep(0.1)


async def status_while(address: str) -> dict:
    """A client's request, answered in good time."""
    async with open_tools(timeout=10.0) as tools:
        return await tools.status(address)


async def flood(entry: NodeEntry, proc: psutil.Process, *, handshake: bool) -> tuple[int, dict]:
    """200 connections that each send all but the last byte of a 3 MiB frame, then stall.
    Returns the node's peak resident memory and its status, asked for mid-attack."""
    almost = (FRAME - 4).to_bytes(4, "big") + bytes(FRAME - 5)  # 3 MiB - 1 bytes of it
    watch = Watch(proc)
    async with attackers() as opened, trio.open_nursery() as nursery:
        nursery.start_soon(watch.run)

        async def one() -> None:
            with trio.move_on_after(15.0):
                raw = await connect(entry.address, opened)
                try:
                    if handshake:
                        await raw.handshake()
                    await raw.stream.send_all(almost)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass  # the node hung up on us: that is the defence working

        with trio.fail_after(30.0):
            async with trio.open_nursery() as attack:
                for _ in range(ATTACK_CONNECTIONS):
                    attack.start_soon(one)
                await trio.sleep(1.0)  # the attack is under way: now a client asks
                status = await status_while(entry.address)
                attack.cancel_scope.deadline = trio.current_time() + 5.0
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    return watch.peak, status


def test_stalled_frames_before_the_handshake_cost_little_and_clients_are_served(
    cluster: LocalCluster,
) -> None:
    entry, proc = target(cluster)
    peak, status = trio.run(partial(flood, entry, proc, handshake=False))
    print(f"\npre-handshake flood: peak RSS {peak / 2**20:.1f} MiB")
    assert peak < RSS_LIMIT
    assert status["id"] == entry.id
    # Counted when the client's request was answered, while the rest were still sending.
    assert status["transport"]["handshake_failures"] >= ATTACK_CONNECTIONS // 2
    assert cluster.is_alive(entry)


def test_stalled_frames_after_the_handshake_cost_little_and_clients_are_served(
    cluster: LocalCluster,
) -> None:
    entry, proc = target(cluster)
    peak, status = trio.run(partial(flood, entry, proc, handshake=True))
    print(f"\npost-handshake flood: peak RSS {peak / 2**20:.1f} MiB, "
          f"buffered peak {status['transport']['buffered_peak'] / 2**20:.1f} MiB")
    assert peak < RSS_LIMIT
    assert status["id"] == entry.id
    transport = status["transport"]
    assert transport["buffered_peak"] <= 16 * 2**20 + ATTACK_CONNECTIONS * 4096
    assert cluster.is_alive(entry)


def test_a_thousand_idle_connections_are_closed_and_descriptors_come_back(
    cluster: LocalCluster,
) -> None:
    entry, proc = target(cluster)
    baseline = proc.num_fds()

    async def main() -> tuple[list[float], int]:
        lasted: list[float] = []
        async with attackers() as opened:
            limiter = trio.CapacityLimiter(50)

            async def one() -> None:
                async with limiter:
                    raw = await connect(entry.address, opened)
                    try:
                        done = await raw.handshake()
                    except (trio.BrokenResourceError, OSError):
                        done = False
                    if not done:  # admission closed it at a cap before its handshake ended
                        lasted.append(0.0)
                        return
                started = time.monotonic()
                if await raw.closed_within(IDLE_TIMEOUT + 3.0):
                    lasted.append(time.monotonic() - started)

            with trio.fail_after(45.0):
                async with trio.open_nursery() as nursery:
                    for _ in range(1000):
                        nursery.start_soon(one)
            peak_fds = proc.num_fds()
        return lasted, peak_fds

    lasted, _ = trio.run(main)
    # Every one was closed: at the idle timeout, or earlier to make room under the caps.
    assert len(lasted) == 1000
    assert max(lasted) <= IDLE_TIMEOUT + 3.0
    time.sleep(1.0)
    assert proc.num_fds() <= baseline + 16
    assert cluster.is_alive(entry)


def test_a_client_claiming_to_be_a_node_at_a_fake_address_is_not_one(
    cluster: LocalCluster,
) -> None:
    entry, _ = target(cluster)

    async def main() -> tuple[dict, dict, dict, dict]:
        async with open_tools(timeout=10.0) as tools:
            before = await tools.status(entry.address)
        async with attackers() as opened:
            raw = await connect(entry.address, opened)
            assert await raw.handshake(role="node", addr="127.0.0.1:1")
            ping = new_message("ping", addr="127.0.0.1:1")
            await raw.stream.send_all(encode_frame(ping))
            pong = await raw.read()
            # A node-only message (a CASPaxos prepare) from it is refused.
            prepare = new_message("prepare", key=bytes(32), ballot=[1, bytes(32)])
            await raw.stream.send_all(encode_frame(prepare))
            refusal = await raw.read()
            async with open_tools(timeout=10.0) as tools:
                after = await tools.status(entry.address)
        assert pong is not None and refusal is not None
        return before, after, pong, refusal

    before, after, pong, refusal = trio.run(main)
    assert pong["k"] == "pong"
    assert refusal["k"] == "error" and "for nodes only" in refusal["err"]["msg"]
    assert after["contacts"] == before["contacts"]  # it never entered the routing table
    assert after["transport"]["unverified_nodes"] > before["transport"]["unverified_nodes"]
