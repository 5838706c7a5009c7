"""Clients of the in-process test network: `node.localnet.LocalNetwork` plus `client()`.

The node hosts run in `node.localnet`; this subclass only hands out NetworkClients of them,
which is the client layer's part (the node layer never imports it).

    async with LocalNetwork.start(nodes=8, seed=1) as net:
        async with net.client() as client:
            await client.put_idata(b"x")
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from node.keys import Keypair
from node.localnet import LocalNetwork as NodeNetwork
from node.localnet import LocalNode

from .network import NetworkClient

__all__ = ["LocalNetwork", "LocalNode"]


class LocalNetwork(NodeNetwork):
    """`node.localnet.LocalNetwork` that also opens clients on its memory network."""

    def client(
        self, keys: Keypair | None = None, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[NetworkClient]:
        kwargs.setdefault("replication", self.config.replication)
        kwargs.setdefault("rng", random.Random(self.rng.getrandbits(64)))
        return NetworkClient.open(self.addresses[:3], keys, network=self.memory, **kwargs)
