"""Who a message came from, and what the layers that move messages promise each other.

`Peer` is the one description of the far end of a link, used by the handshake (which fills in
the key and the claims), the core (which reads only `name`, `role` and `address`) and the
simulator (which knows the truth and fills in just those three). The claims are kept apart
from what this end believes: a peer that *says* it is a node is a client until the transport
has dialled its claimed address back and met the same key there (node/handshake.py).

The Protocols name what each consumer needs of a transport, so the TCP endpoint
(node/endpoint.py), the in-memory one (node/memnet.py) and the simulator's
(simulations/network.py) can stand in for each other without `Any` in the signatures.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from .xorname import XorName

if TYPE_CHECKING:
    from .keys import PublicKey


@dataclass(frozen=True, slots=True)
class Peer:
    """The far end of a link, as far as this end believes it.

    `role` and `address` are what the peer may be treated as: ``"node"`` and its listen
    address only once its claim was checked; otherwise ``"client"`` and None.
    `public_key`, `claimed_role` and `claimed_address` are set by the handshake (what the
    peer's hello proved and said); the core never reads them.
    """

    name: XorName
    role: str  # "node" | "client"
    address: str | None = None
    public_key: PublicKey | None = None
    claimed_role: str = "client"
    claimed_address: str | None = None

    @property
    def verified_node(self) -> bool:
        """True when this end reached the peer's claimed address and found the same key."""
        return self.role == "node"

    def as_verified_node(self) -> Peer:
        return replace(self, role="node", address=self.claimed_address)


class Arrival(Protocol):
    """One message that arrived (`node.handshake.Incoming`, the simulator's `Delivery`)."""

    @property
    def peer(self) -> Peer: ...

    @property
    def msg(self) -> dict[str, Any]: ...


class Outward(Protocol):
    """Something that sends without waiting: an endpoint, or a wrapper that lies or drops."""

    def send_nowait(self, to_name: bytes | None, to_address: str | None, msg: dict[str, Any]) -> bool: ...


class Inbox(Protocol):
    """A receive channel of arrivals (a trio memory channel or the simulator's)."""

    async def receive(self) -> Any: ...

    def receive_nowait(self) -> Any: ...


class HostEndpoint(Outward, Protocol):
    """What a node host needs of its transport."""

    @property
    def inbox(self) -> Inbox: ...

    @property
    def address(self) -> str | None: ...

    def stats(self) -> dict[str, Any]: ...


class RpcEndpoint(Protocol):
    """What a request/reply client (`node.rpc.RpcClient`) needs of its transport."""

    @property
    def inbox(self) -> AsyncIterator[Any]: ...

    @property
    def on_disconnect(self) -> list[Callable[[XorName], None]]: ...

    async def send(self, to_name: bytes, to_address: str | None, msg: dict[str, Any]) -> None: ...

    async def connect(self, address: str, expected_name: bytes | None = None) -> Peer: ...

    def is_connected(self, name: bytes) -> bool: ...


class ClientEndpoint(RpcEndpoint, Protocol):
    """What a network client runs: an `RpcEndpoint` it starts and closes itself."""

    async def run(self, *, task_status: Any = ...) -> None: ...

    async def aclose(self) -> None: ...


class FaultHook(Protocol):
    """The fault rules a host applies on an admin's request (node/fault_rules.py)."""

    def configure(self, config: Mapping[str, Any]) -> None: ...

    def config(self) -> dict[str, Any]: ...
