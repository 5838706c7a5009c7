"""An in-process network for endpoints: loopback TCP replaced by in-memory streams."""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import trio
import trio.testing

if TYPE_CHECKING:
    from .endpoint import Endpoint

class MemoryNetwork:
    """An in-process stand-in for loopback TCP: endpoints built with ``network=`` bind an
    address ``mem:N`` and dial each other over `trio.testing.memory_stream_pair`.

    Nothing touches the OS, so it runs under `trio.testing.MockClock` deterministically.
    `dial` is public: a test can open a raw stream to an endpoint with it.
    """

    def __init__(self) -> None:
        self._endpoints: dict[str, Endpoint] = {}
        self._next_port = 1

    def bind(self, endpoint: Endpoint) -> str:
        address = f"mem:{self._next_port}"
        self._next_port += 1
        self._endpoints[address] = endpoint
        return address

    def unbind(self, address: str) -> None:
        self._endpoints.pop(address, None)

    async def dial(self, address: str) -> trio.abc.HalfCloseableStream:
        await trio.lowlevel.checkpoint()
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {address}")
        ours, theirs = trio.testing.memory_stream_pair()
        endpoint.accept_stream(theirs)
        return ours
