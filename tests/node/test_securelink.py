"""Encrypted links (node/securelink.py), attacked as someone on the path would.

A man in the middle relays a real client endpoint's TCP connection to a real server
endpoint over raw sockets, unit by unit (every handshake frame and every sealed record is a
4-byte length and a body), and alters, replays, reorders or injects one unit after the
handshake. The server must refuse it, deliver nothing from that unit on, and drop the
connection. A passive relay must see none of the plaintext. Hypothesis checks the record
layer on its own: whatever bytes are changed, the opener yields only a prefix of what was
sealed, or refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from node.errors import ProtocolError
from node.keys import Keypair
from node.securelink import (
    MAX_RECORD,
    Ephemeral,
    LinkTampered,
    Opener,
    Sealer,
    SecureStream,
    derive_keys,
    transcript,
)
from node.transport import Endpoint
from node.wire import decode_body, encode_frame, new_message

GUARD = 20.0
HANDSHAKE_UNITS = 2  # hello and auth, each way, in clear

Attack = Callable[[int, bytes], list[bytes]]  # (index of the unit after the handshake, unit) -> units to forward


def units(buf: bytearray) -> list[bytes]:
    """Take every whole length-prefixed unit off the front of `buf`."""
    out = []
    while len(buf) >= 4:
        end = 4 + int.from_bytes(buf[:4], "big")
        if len(buf) < end:
            break
        out.append(bytes(buf[:end]))
        del buf[:end]
    return out


@asynccontextmanager
async def relay(target: str, attack: Attack, seen: bytearray,
                hello: Callable[[bytes], bytes] = lambda u: u) -> AsyncIterator[str]:
    """A TCP relay to `target` on 127.0.0.1; client->server units after the handshake go
    through `attack`; everything the client sends is recorded in `seen`."""
    host, port = target.rsplit(":", 1)

    async def pump(src: trio.SocketStream, dst: trio.SocketStream, attack_it: bool) -> None:
        buf, count = bytearray(), 0
        while data := await src.receive_some(65536):
            if not attack_it:
                await dst.send_all(data)
                continue
            seen.extend(data)
            buf.extend(data)
            for unit in units(buf):
                count += 1
                if count == 1:
                    sent = [hello(unit)]
                elif count <= HANDSHAKE_UNITS:
                    sent = [unit]
                else:
                    sent = attack(count - HANDSHAKE_UNITS - 1, unit)
                for piece in sent:
                    await dst.send_all(piece)
        await dst.aclose()

    connections = [0]

    async def handle(client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream(host, int(port))
        connections[0] += 1
        first = connections[0] == 1  # the client redials after a drop: that one goes untouched
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_quietly, pump, client, server, first)
            nursery.start_soon(_quietly, pump, server, client, False)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def _quietly(pump: Callable, *args: object) -> None:
    with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await pump(*args)


async def run_attack(attack: Attack, count: int = 6,
                     hello: Callable[[bytes], bytes] = lambda u: u) -> tuple[list[int], dict, bytes]:
    """A client sends notes 0..count-1 through the relay; returns the notes the server got,
    the server's counters, and the client's bytes as the relay saw them."""
    server, client = Endpoint(Keypair()), Endpoint(Keypair(), role="client")
    got: list[int] = []
    seen = bytearray()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        await nursery.start(client.run)
        async with relay(server.address, attack, seen, hello) as via:
            with trio.fail_after(GUARD):
                for n in range(count):
                    client.send_nowait(server.name, via, new_message("note", n=n, body=b"SECRET-%d" % n))
                    await trio.sleep(0.05)  # one record each, in order
                # Wait until the server delivered all, or dropped the link.
                while len(got) < count and not (server.stats()["protocol_errors"]
                                                 or server.stats()["handshake_failures"]):
                    with trio.move_on_after(0.2):
                        got.append((await server.inbox.receive()).msg["n"])
                while True:  # whatever was already queued
                    try:
                        got.append(server.inbox.receive_nowait().msg["n"])
                    except trio.WouldBlock:
                        break
                await trio.sleep(0.1)
        stats = server.stats()
        nursery.cancel_scope.cancel()
    return got, stats, bytes(seen)


def passthrough(i: int, unit: bytes) -> list[bytes]:
    return [unit]


async def test_a_passive_relay_sees_no_plaintext_and_everything_arrives() -> None:
    got, stats, seen = await run_attack(passthrough)
    assert got == list(range(6)) and stats["protocol_errors"] == 0
    assert b"SECRET" not in seen and b"note" not in seen


def at(target: int, change: Callable[[bytes], list[bytes]]) -> Attack:
    def attack(i: int, unit: bytes) -> list[bytes]:
        return change(unit) if i == target else [unit]
    return attack


def flip_last_byte(unit: bytes) -> list[bytes]:
    return [unit[:-1] + bytes([unit[-1] ^ 1])]


def flip_a_body_byte(unit: bytes) -> list[bytes]:
    return [unit[:10] + bytes([unit[10] ^ 0x80]) + unit[11:]]


@pytest.mark.parametrize("name, attack, lost", [
    ("tampered tag", at(2, flip_last_byte), {2}),
    ("tampered ciphertext", at(2, flip_a_body_byte), {2}),
    ("replayed record", at(2, lambda u: [u, u]), set()),
    ("dropped record", at(2, lambda u: []), {2, 3}),
    ("injected random record", at(2, lambda u: [(40).to_bytes(4, "big") + bytes(range(40)), u]), {2}),
    ("injected plaintext frame", at(2, lambda u: [encode_frame(new_message("note", n=99)), u]), {2}),
])
async def test_an_altered_replayed_or_injected_record_is_refused_and_the_link_dropped(
    name: str, attack: Attack, lost: set[int],
) -> None:
    got, stats, _ = await run_attack(attack)
    # Refused once, and the connection dropped; the client's next notes go over a new
    # connection (which the relay leaves alone), so later notes may arrive.
    assert stats["protocol_errors"] == 1, name
    assert stats["connections_closed"] >= 1, name
    assert got[:2] == [0, 1], (name, got)  # what came before the attack was delivered
    assert 99 not in got and not lost & set(got), (name, got)  # nothing forged, nothing attacked
    assert got == sorted(set(got)), (name, got)  # no note twice (the replay), none out of order


async def test_reordered_records_are_refused() -> None:
    held: list[bytes] = []

    def swap(i: int, unit: bytes) -> list[bytes]:
        if i == 2:
            held.append(unit)
            return []
        if i == 3:
            return [unit, *held]
        return [unit]

    got, stats, _ = await run_attack(swap)
    assert stats["protocol_errors"] == 1 and got[:2] == [0, 1]
    assert not {2, 3} & set(got) and got == sorted(set(got))


async def test_a_man_in_the_middle_cannot_swap_the_ephemeral_key() -> None:
    mitm = Ephemeral()

    def swap_eph(unit: bytes) -> bytes:
        msg = decode_body(unit[4:])
        msg["eph"] = mitm.public  # so the relay could compute the client side's keys
        return encode_frame(msg)

    got, stats, _ = await run_attack(passthrough, count=2, hello=swap_eph)
    # The client's signature covers its own ephemeral key: the server refuses the handshake,
    # and what the client meant to send on that connection never arrives.
    assert stats["handshake_failures"] == 1 and 0 not in got


# ----------------------------------------------------------------------- the record layer


def pair() -> tuple[Sealer, Opener]:
    a, b = Ephemeral(), Ephemeral()
    ends = ((b"n" * 32, b"p" * 32, a.public), (b"m" * 32, b"q" * 32, b.public))
    send, _ = derive_keys(a.shared(b.public), transcript(*ends), dialled=True)
    _, receive = derive_keys(b.shared(a.public), transcript(*ends), dialled=False)
    return Sealer(send), Opener(receive)


def test_both_ends_derive_the_same_keys_and_each_direction_its_own() -> None:
    a, b = Ephemeral(), Ephemeral()
    ends = ((b"n" * 32, b"p" * 32, a.public), (b"m" * 32, b"q" * 32, b.public))
    ka = derive_keys(a.shared(b.public), transcript(*ends), dialled=True)
    kb = derive_keys(b.shared(a.public), transcript(*ends), dialled=False)
    assert ka == (kb[1], kb[0]) and ka[0] != ka[1]
    # Another transcript (a swapped nonce, say) gives other keys from the same secret.
    c, d = Ephemeral(), Ephemeral()
    shared = c.shared(d.public)
    other = ((b"x" * 32, b"p" * 32, c.public), (b"m" * 32, b"q" * 32, d.public))
    same = ((b"n" * 32, b"p" * 32, c.public), (b"m" * 32, b"q" * 32, d.public))
    assert derive_keys(shared, transcript(*other), dialled=True) != derive_keys(shared, transcript(*same), dialled=True)


def test_a_low_order_ephemeral_key_is_refused() -> None:
    with pytest.raises(ProtocolError):
        Ephemeral().shared(bytes(32))
    with pytest.raises(ProtocolError):
        Ephemeral().shared(b"short")


def test_records_are_cut_at_max_record_and_open_in_order() -> None:
    sealer, opener = pair()
    data = bytes(range(256)) * (MAX_RECORD // 128 + 3)
    sealed = sealer.seal(data)
    assert sealer.counter == len(data) // MAX_RECORD + 1
    out = b""
    for i in range(0, len(sealed), 7777):  # fed in arbitrary pieces
        opener.feed(sealed[i:i + 7777])
        out += opener.open_all()
    assert out == data


@settings(max_examples=150, deadline=None)
@given(messages=st.lists(st.binary(min_size=1, max_size=300), min_size=1, max_size=5),
       position=st.integers(min_value=0), xor=st.integers(min_value=1, max_value=255))
def test_any_altered_byte_yields_only_a_prefix_of_what_was_sealed_or_a_refusal(
    messages: list[bytes], position: int, xor: int,
) -> None:
    sealer, opener = pair()
    sealed = bytearray(b"".join(sealer.seal(m) for m in messages))
    sealed[position % len(sealed)] ^= xor
    opener.feed(bytes(sealed))
    try:
        out = opener.open_all()
    except LinkTampered:
        with pytest.raises(LinkTampered):  # broken for good
            opener.open_all()
        return
    whole = b"".join(messages)
    assert whole.startswith(out) and out != whole


async def test_send_now_keeps_what_a_full_socket_cannot_take_and_sends_it_first() -> None:
    left, right = trio.socket.socketpair()
    key_ab, key_ba = bytes(range(32)), bytes(range(32, 64))
    a = SecureStream(trio.SocketStream(left), key_ab, key_ba)
    b = SecureStream(trio.SocketStream(right), key_ba, key_ab)
    big = bytes(range(256)) * (32 * 1024)  # 8 MiB: more than a socket pair buffers
    assert a.can_send_now
    assert a.send_now(b"first") and a.unsent == 0
    assert not a.send_now(big) and a.unsent > 0  # the socket took what it could
    assert not a.send_now(b"third")  # kept behind the rest, never ahead of it
    expected = b"first" + big + b"third" + b"last"
    got = bytearray()

    async def read_all() -> None:
        while len(got) < len(expected):
            got.extend(await b.receive_some())

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await a.send_all(b"last")
    assert bytes(got) == expected and a.unsent == 0
    await a.aclose()
    assert not a.can_send_now
    with pytest.raises(OSError):  # a closed socket is an error, never another descriptor
        a.send_now(b"late")
    await b.aclose()


def test_send_now_needs_a_socket() -> None:
    one, _ = trio.testing.memory_stream_pair()
    stream = SecureStream(one, bytes(32), bytes(32))
    assert not stream.can_send_now
    with pytest.raises(RuntimeError):
        stream.send_now(b"x")
