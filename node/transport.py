"""Authenticated message transport between peers named by their keys (trio): the public names.

The transport is several modules, one concern each; this one gathers their public names so
that ``from node.transport import ...`` keeps working:

- node/framing.py      frames off a stream: frame limits, stall deadline, shared receive budget
- node/handshake.py    the hello/auth handshake, `Peer` (who is at the other end), `Incoming`
- node/securelink.py   after the handshake: every link encrypted, every byte authenticated
- node/connections.py  accept and dial, admission caps, dial-back of claimed nodes, reading
- node/endpoint.py     `Endpoint`: lifecycle, public API, send queues and writers
- node/fault_rules.py  `FaultHook` and `FaultRules`, the chaos hook
- node/memnet.py       `MemoryNetwork`, in-memory streams for tests under a virtual clock
- node/rpc.py          `RpcClient`, request/response for clients and tools
"""

from __future__ import annotations

from .connections import Unreachable, parse_address
from .endpoint import Endpoint
from .fault_rules import FaultHook, FaultRules
from .framing import BufferBudgetExceeded, FrameReader, ReceiveBudget
from .handshake import HandshakeError, Incoming, Peer, auth_payload
from .memnet import MemoryNetwork
from .rpc import RpcClient, open_rpc_client

__all__ = [
    "BufferBudgetExceeded",
    "Endpoint",
    "FaultHook",
    "FaultRules",
    "FrameReader",
    "HandshakeError",
    "Incoming",
    "MemoryNetwork",
    "Peer",
    "ReceiveBudget",
    "RpcClient",
    "Unreachable",
    "auth_payload",
    "open_rpc_client",
    "parse_address",
]
