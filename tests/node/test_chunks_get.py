"""An IData get when the holder the client asks first lies or says nothing.

The client asks the closest member of the chunk's group first; whatever that member does,
the get must still return the true bytes from another holder (the in-process network over
the in-memory transport, under the autojump clock, so the silent member's timeout costs no
real time).
"""

from __future__ import annotations

import dataclasses

import pytest
import trio

from client.localnet import LocalNetwork
from node import errors as E
from node.requests import GetIData

VALUE = b"the chunk as it was stored"


@pytest.mark.parametrize("fault", ["corrupt", "silent", "absent"])
async def test_a_get_succeeds_when_the_first_asked_holder_lies_or_is_silent(autojump_clock, fault):
    async with LocalNetwork.start(nodes=6, seed=11) as net:
        async with net.client() as writer:
            name = await writer.put_idata(VALUE)
        await net.until(lambda: sorted(net.holders(name)) == sorted(net.close_group(name)), within=30)
        first = net.nodes[net.close_group(name)[0]]
        assert first.core is not None
        asked: list[bytes] = []
        submit = first.core.chunks.submit

        def faulty_submit(request, respond):
            if isinstance(request.op, GetIData):
                asked.append(bytes(request.op.chunk))
                if fault == "silent":
                    return  # never answers (the node's own deadline aside)
                if fault == "absent":
                    respond(error=E.NoSuchData("lost it"))
                    return
            submit(request, respond)

        first.core.chunks.submit = faulty_submit  # type: ignore[method-assign]
        if fault == "corrupt":
            first.core.config = dataclasses.replace(first.core.config, lie=frozenset({"corrupt"}))
        async with net.client() as reader:  # a fresh client: nothing cached
            with trio.fail_after(60):
                assert await reader.get_idata(name) == VALUE
            assert asked == [bytes(name)]  # it was asked first, and not again
            # Marked: the next get of it goes to another holder at once.
            if fault != "absent":
                asked.clear()
                assert await reader.get_idata(name) == VALUE
                assert asked == []
