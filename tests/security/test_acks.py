"""A client does not take one member's word that its write was done (issue 11).

A member used to answer a client's MD write "ok" with nothing to back it, so a Byzantine one
could say "ok" and drop the write. Now the "ok" carries the value's head and the votes of the
members that took it (node/proofs.py, `proves_ack`), and the client checks that enough nodes
near the MD's name, each of which has answered it, voted for a value holding its request; an
unproven "ok" sends it to another member (a retry of a write that did take effect is
recognised, and proven, there).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from client.localnet import LocalNetwork
from node import ANYONE, Action, Ins, MutableData, PermissionSet, XorName
from node.keys import Keypair
from node.paxos import Register, item_key
from node.proofs import fingerprint, make_vote, proves_ack
from node.requests import MutateEntries
from node.rules import MDataState
from node.xorname import distance, sha3_256

KEY = b"k" * 40
PRINT = fingerprint(b"r" * 16, b"what was signed")


def _md(owner: Any, name: bytes) -> MutableData:
    return MutableData(XorName.hash_of(name), 15000, {}, {ANYONE: PermissionSet.allowing(Action.INSERT)}, 0,
                       frozenset({owner}))


async def _writes_after_a_lying_member(check: bool) -> tuple[int, int, int]:
    """20 inserts through a group whose nearest member answers every write "ok" and drops it;
    how many the client was told were done, how many are there, and how many "ok"s it refused."""
    async with LocalNetwork.start(nodes=8, seed=5) as net:
        async with net.client() as client:
            md = _md(client.public_key, b"acks")
            await client.put_mdata(md)
            liar = net.nodes[net.close_group(md.name)[0]]
            liar.core.config = dataclasses.replace(liar.core.config, lie=frozenset({"fake_ack"}))
            client.check_acks = check
            for i in range(20):
                await client.mutate_entries(md.address, {b"e%d" % i: Ins(b"v")})
            async with net.client() as reader:  # a fresh client reads by quorum
                present = set(await reader.list_keys(md.address))
            return 20, sum(1 for i in range(20) if b"e%d" % i in present), client.stats["unproven"]


async def test_a_member_that_says_ok_and_drops_the_write_does_not_fool_the_client(autojump_clock) -> None:
    told, present, refused = await _writes_after_a_lying_member(check=True)
    assert present == told, "a write the client was told of is missing"
    assert refused > 0, "the liar was never asked: the test proves nothing"


async def test_without_the_check_the_client_believes_the_lie(autojump_clock) -> None:
    told, present, refused = await _writes_after_a_lying_member(check=False)
    assert refused == 0
    assert present < told, "the liar's dropped writes should be missing"


async def test_made_up_voters_do_not_count_even_near_the_name(autojump_clock) -> None:
    """A liar can make keys whose names fall near the MD's name (a few tries in a small
    network) and sign a head that lists the request. They are no running nodes: the client
    counts only voters that have answered it. Telling it of them as contacts does not help."""
    async with LocalNetwork.start(nodes=8, seed=5) as net:
        async with net.client() as client:
            md = _md(client.public_key, b"forged")
            await client.put_mdata(md)  # the client has heard from the MD's group
            request = client._sign(MutateEntries(md.address, {b"x": Ins(b"v")}))
            print_ = fingerprint(request.request_id, request.signing_bytes())
            head = msgpack.packb([None, [print_], [], [], b"\0" * 32, 1], use_bin_type=True)
            digest = sha3_256(head)[:16]
            group = {n.core.name for n in net.nodes if n.core is not None} & set(client._heard)
            radius = max(distance(n, md.name) for n in group)
            made_up = []
            while len(made_up) < 5:
                keys = Keypair()
                if distance(keys.name, md.name) <= radius:
                    made_up.append(keys)
            forged = [head, [make_vote(k, item_key(md.address), digest) for k in made_up]]
            assert not client._proven(request, forged)
            for keys in made_up:  # a node's find_node reply names them as contacts
                client.nodes[keys.name] = "127.0.0.1:9"
            assert not client._proven(request, forged)
            client._heard.update(k.name for k in made_up)  # only if they had answered
            assert client._proven(request, forged), "the test's forged proof would pass otherwise"


# ---------------------------------------------------------------------------- proves_ack

def _genuine(voters: list[Keypair]) -> tuple[Register, list[Any]]:
    value = Register(MDataState(None, (PRINT,)), tuple(v.name for v in voters))
    return value, [value.head(), [make_vote(k, KEY, value.digest()) for k in voters]]


VOTERS = [Keypair() for _ in range(5)]


def test_a_genuine_proof_holds_and_each_part_of_it_matters() -> None:
    value, proof = _genuine(VOTERS[:3])
    anyone = lambda _name: True  # noqa: E731
    assert proves_ack(KEY, PRINT, proof, anyone, 3)
    assert not proves_ack(KEY, PRINT, proof, anyone, 4), "three votes are not four"
    assert not proves_ack(KEY, fingerprint(b"r" * 16, b"another request"), proof, anyone, 3)
    assert not proves_ack(b"x" * 40, PRINT, proof, anyone, 3), "votes for another MD"
    far = {VOTERS[0].name}
    assert not proves_ack(KEY, PRINT, proof, lambda n: n not in far, 3), "a voter the client finds implausible"
    tampered = bytearray(proof[0])
    tampered[-1] ^= 1
    assert not proves_ack(KEY, PRINT, [bytes(tampered), proof[1]], anyone, 3)
    # The same voter three times counts once.
    assert not proves_ack(KEY, PRINT, [proof[0], [proof[1][0]] * 3], anyone, 3)
    # A head that lists the request, with votes for another value: proves nothing.
    _other, other_proof = _genuine(VOTERS[:3])
    forged_head = msgpack.packb([None, [PRINT], [], [], b"\0" * 32, 99], use_bin_type=True)
    assert not proves_ack(KEY, PRINT, [forged_head, other_proof[1]], anyone, 3)


junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=64) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(proof=junk, head=st.binary(max_size=200), votes=junk)
def test_a_hostile_proof_never_raises_and_never_proves(proof: Any, head: bytes, votes: Any) -> None:
    anyone = lambda _name: True  # noqa: E731
    assert proves_ack(KEY, PRINT, proof, anyone, 1) is False
    assert proves_ack(KEY, PRINT, [head, votes], anyone, 1) is False
    _value, genuine = _genuine(VOTERS[:3])
    assert proves_ack(KEY, PRINT, [genuine[0], votes], anyone, 1) is False  # the head alone proves nothing
