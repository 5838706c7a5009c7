"""What a node's services need of the node they run in.

`Replicator` (MDs), `Acceptor`, `Proposal`, `ChunkKeeper` (IData) and `AccountGuard` are
handed the node they work for. They see it through `NodeServices`: who the node is, its
store and routing, its clock, how to send, ask and answer, and its view of close groups.
`NodeCore` (node/core.py) is the one implementation; naming the interface here, rather than
importing the core, keeps the services from depending on the module that builds them, and
shows in one place everything they may touch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from . import errors as E
    from .config import NodeConfig
    from .keys import Keypair
    from .peer import Peer
    from .requests import Request
    from .routing import Contact, RoutingTable, Standing
    from .store import Store
    from .xorname import XorName

Respond = Callable[..., None]


class RequestRunner(Protocol):
    """Runs a signed request on its MD, here or through a member (node/replication.py)."""

    def submit(self, request: Request, respond: Respond, proof: Request | None = None) -> None: ...


class NodeServices(Protocol):
    """The node as its services see it. Read-only from their side: they change the node only
    through what it sends, schedules and stores."""

    @property
    def config(self) -> NodeConfig: ...

    @property
    def name(self) -> XorName: ...

    @property
    def keys(self) -> Keypair: ...

    @property
    def store(self) -> Store: ...

    @property
    def routing(self) -> RoutingTable: ...

    @property
    def standing(self) -> Standing:
        """Which peers have done work for us, and which shirk it (rule 10)."""
        ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def now(self) -> float: ...

    @property
    def ready(self) -> bool:
        """Routing has bootstrapped; until then the node does not coordinate."""

    @property
    def membership_epoch(self) -> int:
        """Bumped whenever routing gains or loses a contact."""

    @property
    def network_id(self) -> bytes: ...

    @property
    def replicator(self) -> RequestRunner: ...

    def log(self, event: str, **fields: Any) -> None: ...

    def send(self, to: XorName | None, address: str | None, msg: dict[str, Any]) -> None: ...

    def reply(self, peer: Peer, request: dict[str, Any], kind: str, **fields: Any) -> None: ...

    def reply_error(self, peer: Peer, request: dict[str, Any], exc: E.SafeError) -> None: ...

    def rpc(
        self,
        to: Contact | XorName,
        msg: dict[str, Any],
        on_reply: Callable[[dict[str, Any] | None], None],
        timeout: float | None = None,
    ) -> None: ...

    def at(self, when: float, fn: Callable[[], None]) -> int: ...

    def proven(self, name: bytes) -> bool:
        """Has the peer ever answered a work request of ours (`Standing`)?"""

    def give_work(self, name: bytes) -> None:
        """Send the peer a little work, so that it can prove itself (or fail to)."""

    def group(self, name: bytes, count: int | None = None) -> list[XorName]: ...

    def lookup(self, target: XorName, done: Callable[[list[Contact]], None], k: int | None = None) -> None:
        """An iterative lookup of the nodes nearest `target`; `done` gets those that answered."""

    def knows_group(self, name: bytes) -> bool:
        """Can our view of `name`'s close group be trusted (we know that region well)?"""

    def recently_lost(self, name: bytes, count: int, within: float | None = None) -> list[XorName]: ...

    def contact(self, name: XorName) -> Contact | None: ...

    def check_fresh(self, request: Any) -> None: ...
