"""A retried append (same event ids, expected version ANY) after an unknown outcome is
stored once, even when the writer's process learnt the stream's new end meanwhile.

Found by `safenet chaos run eventstore --seeds 1..50` (seed 2): a batch of four events
stood twice in its stream (versions 2-5 and 6-9) and in the log. The first attempt took
effect but its reply was lost; a reader of the same process then cached the stream's end
(v5), and the retry, trusting that cache, appended at v6 without the check that
recognises a retried last append.
"""

from __future__ import annotations

import trio

from client.mock import MockNetwork
from eventstore.api import ANY, EventData, EventStore
from node.keys import Keypair
from node.requests import MutateEntries


async def test_a_retry_after_a_lost_reply_is_stored_once_despite_a_cached_end(autojump_clock):
    net = MockNetwork(seed=1)
    db = await EventStore(net.client(Keypair(b"\x07" * 32)), pending_grace=1.0).create_database("shop")
    await db.append("invoice@4", [EventData("Tick", {"n": i}) for i in range(2)])
    batch = [EventData("Tick", {"n": 2 + i}) for i in range(4)]
    # The stream write takes effect, then the network goes quiet for this writer: every
    # reply from then on is lost, so the append ends with its outcome unknown.
    log_segment = db.log.layout.log_segment(0)
    hit: list[bool] = []

    def from_the_stream_write(request: object) -> bool:
        op = getattr(request, "op", None)
        if isinstance(op, MutateEntries) and op.address != log_segment:
            hit.append(True)
        return bool(hit)

    net.fail_next(1000, applied=True, when=from_the_stream_write)
    try:
        await db.append("invoice@4", batch, expected_version=ANY)
    except Exception:  # noqa: BLE001 - the unknown outcome the test is about
        pass
    else:
        raise AssertionError("the injected failure did not hit the stream write")
    net.faults.injections.clear()
    await db.read_stream("invoice@4")  # the process learns the stream's end (v5)
    await db.append("invoice@4", batch, expected_version=ANY)  # the retry, same ids
    ids = [e.id for e in await db.read_stream("invoice@4")]
    assert len(ids) == len(set(ids)) == 6, "the retried batch is in the stream twice"
    with trio.fail_after(5):
        log = await db.read_all()
    assert len([e for e in log if e.stream == "invoice@4"]) == 6
