"""`NodeConfig`: the tunables of one node, shared by the core and the services it runs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class NodeConfig:
    """Tunables of one node. Times are seconds (virtual in the simulator)."""

    replication: int = 5  # R: the close group holding each item; a majority is its quorum
    k: int = 20
    alpha: int = 3
    strikes: int = 3  # failed checks before a contact is evicted
    rpc_timeout: float = 1.5
    ping_interval: float = 1.0  # how often a node looks at its 2R+2 nearest contacts
    # How long a neighbour may stay silent before it is pinged (node/core.py `_check_liveness`):
    # `ping_interval` while it is new or lately failed a request; once it has been steady for
    # `steady_after` seconds, `ping_steady` if it is in the close group of an item this node
    # holds (its death must be noticed soon, for the item to be copied again), and
    # `ping_idle` if it is not (its death only matters to routing; requests sent to it
    # notice too). A ping that goes unanswered brings the neighbour back to `ping_interval`.
    # `ping_steady` stays at one second: at 1.5 s a SIGKILLed holder's first item came back
    # 5.5-6.5 s after the kill on real processes under load (bench/node_footprint.py), and
    # re-homing 6,000 items must fit in what is left of the 10 s target.
    ping_steady: float = 1.0
    ping_idle: float = 10.0
    steady_after: float = 10.0
    sync_interval: float = 2.0
    refresh_interval: float = 600.0
    proposal_attempts: int = 8
    client_deadline: float = 12.0  # a client request not done by then is answered RequestTimeout
    grace: float = 30.0  # how long a node keeps an item it no longer should hold
    lost_memory: float = 3600.0  # how long evicted contacts are still pinged now and then
    # How long an evicted contact still counts as a member of the close groups it was in when
    # a node decides that an MD does not exist yet (node/proposer.py): longer than a partition
    # lasts, so that the cut-off side cannot create an MD the other side holds; short enough
    # that nodes gone for good (churn) do not block creations near them for long.
    absence_memory: float = 120.0
    # For `lost_fast` seconds after its eviction a contact is among those knocked on a few times
    # a second (a healed partition is found at once); after that, once every `lost_every`.
    lost_fast: float = 60.0
    lost_every: float = 30.0
    neighbour_refresh: float = 15.0  # how often a node looks up its own neighbourhood...
    neighbour_backoff: int = 8  # ...stretched up to this many times while it stays the same
    # Standing (node/routing.py `Standing`, docs/security.md): a peer that lets this many work
    # requests in a row lapse while it keeps answering pings is left out of close groups for
    # `probation` seconds; after `bans` such demotions with no work done, it is banned for `ban`.
    shirk_strikes: int = 4
    probation: float = 20.0
    bans: int = 3
    ban: float = 120.0
    verify_on_accept: bool = True  # acceptors re-check client signatures in delta accepts
    # The network's id, bound into every signed request. Empty: the first node of a network
    # takes its own name, and every other node takes its bootstrap contacts' id.
    network_id: bytes = b""
    max_request_ttl: float = 3600.0  # how far ahead a request's expiry may be (seconds)
    clock_skew: float = 120.0  # how far apart nodes' and clients' clocks may be
    max_sync_proposals: int = 64  # concurrent repair/reconfiguration rounds
    # Test-only switches that break the contract on purpose, so tests can show that the
    # checker notices: "ack_before_quorum", "skip_version_check", "no_anti_entropy", and the
    # trust breaks (docs/security.md): "trust_any_peer", "accept_unvalidated",
    # "unbounded_numbers", "trust_idle_members" (a peer that answers pings but does no work
    # keeps its place in close groups), "trust_the_coordinator" (only an MD's coordinator
    # checks the other members' copies, so a coordinator that withholds repair stops it),
    # "forget_lost_members" (absence of an MD is concluded without the contacts evicted lately,
    # so both sides of a partition may create it), "adopt_any_certified" (an acceptor takes a
    # certified value that is older than its copy, so an old certificate rolls copies back).
    breaks: frozenset[str] = frozenset()
    # Test-only lying modes (a Byzantine node, for proving clients trust no single node):
    # "forge" (made-up MD values), "stale" (old MD versions), "corrupt" (damaged chunks),
    # "withhold" (answers everything but never starts anti-entropy: no digests, no repairs,
    # no moves, no chunk pushes; it still scrubs its own disk), "fake_ack" (answers a client's
    # MD write "ok" at once and never proposes it: clients must not take its word).
    lie: frozenset[str] = frozenset()
