"""A node as an OS process: `safenet node run --data-dir DIR ...`.

The data dir holds the node's signing key (`node.key`, made on first start and reused, so a
restarted node keeps its name and its place in the address space), its store
(`store.sqlite3`) and its log (`node.log`, one JSON object a line). The process listens on
TCP, joins through its bootstrap contacts, and serves until SIGTERM/SIGINT or an admin
shutdown.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click
import trio

from .connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_SOURCE
from .core import NodeConfig, NodeCore
from .framing import DEFAULT_MAX_BUFFERED
from .host import NodeHost
from .keys import Keypair
from .store import SqliteStore
from .transport import Endpoint, FaultRules, parse_address

WILDCARDS = ("0.0.0.0", "::", "")

KEY_FILE = "node.key"
STORE_FILE = "store.sqlite3"
LOG_FILE = "node.log"
INFO_FILE = "node.json"
# A node closes connections silent this long. Its links to other nodes carry pings and
# replication traffic, and an idle one that closes is redialled when next needed.
IDLE_TIMEOUT = 60.0


class JsonLog:
    """One JSON object a line, each with the time, the node id and the event."""

    def __init__(self, stream: TextIO, node_id: str) -> None:
        self.stream = stream
        self.node_id = node_id

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"t": round(time.time(), 6), "node": self.node_id, "event": event}
        record.update(fields)
        self.stream.write(json.dumps(record, default=_jsonable) + "\n")
        self.stream.flush()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return repr(value)


async def serve(
    data_dir: Path,
    *,
    host: str,
    port: int,
    bootstrap: list[str],
    config: NodeConfig,
    admin_key: bytes | None,
    log_stream: TextIO,
    limits: dict[str, Any] | None = None,
    fault_rules: dict[str, Any] | None = None,
    advertise: str | None = None,
) -> None:
    keys = Keypair.load_or_create(data_dir / KEY_FILE)
    log = JsonLog(log_stream, keys.name.hex())
    store = SqliteStore(data_dir / STORE_FILE)
    fault = FaultRules(rng=random.Random())
    if fault_rules:
        fault.configure(fault_rules)
    endpoint = Endpoint(keys, role="node", listen_host=host, listen_port=port, fault=fault,
                        advertise=advertise, **(limits or {}))
    # The signal receiver spans the whole nursery: were it closed after start-up, SIGTERM
    # would fall back to its default action and kill the process without a clean stop.
    try:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_stop_on_signal, signals, nursery.cancel_scope, log)
                address = await nursery.start(endpoint.run)
                core = NodeCore(keys, store, config, rng=random.Random(), address=address, log=log)
                host_ = NodeHost(core, endpoint, admin_name=admin_key, fault=fault,
                                 on_shutdown=nursery.cancel_scope.cancel)
                (data_dir / INFO_FILE).write_text(json.dumps(
                    {"id": keys.name.hex(), "address": address, "pid": os.getpid(), "started": time.time()}
                ))
                log("started", address=address, bootstrap=bootstrap, replication=config.replication)
                await nursery.start(host_.run, bootstrap)
                print(f"node {keys.name.hex()} listening on {address}", flush=True)
    finally:
        log("stopped")
        store.close()


async def _stop_on_signal(signals: Any, scope: trio.CancelScope, log: JsonLog) -> None:
    async for signum in signals:
        log("signal", signum=int(signum))
        scope.cancel()
        return


@click.command("run")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Directory for this node's key, store and log (created if missing).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (see --listen).")
@click.option("--port", default=0, show_default=True, help="TCP port (0 picks a free one).")
@click.option("--listen", default=None, metavar="HOST:PORT",
              help="Address to listen on, any interface (overrides --host and --port).")
@click.option("--advertise", default=None, metavar="HOST:PORT",
              help="Address peers are told to reach this node at [default: the one it listens on]; "
                   "needed when listening on 0.0.0.0 or behind a port forward.")
@click.option("--bootstrap", multiple=True, metavar="HOST:PORT", help="A node to join through (repeatable).")
@click.option("--replication", default=5, show_default=True, help="R: nodes in each item's close group.")
@click.option("--admin-key", default=None, metavar="HEX",
              help="Name (64 hex) of the key allowed to send admin messages.")
@click.option("--lie", multiple=True, type=click.Choice(["forge", "stale", "corrupt"]), hidden=True,
              help="Test only: make this node a liar (forged MD values, stale versions, corrupted chunks).")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=IDLE_TIMEOUT,
              show_default=True, envvar="SAFENET_IDLE_TIMEOUT", show_envvar=True,
              help="Close a connection after this many seconds with no traffic (node links ping).")
@click.option("--max-connections", type=click.IntRange(min=1), default=DEFAULT_MAX_CONNECTIONS,
              show_default=True, envvar="SAFENET_MAX_CONNECTIONS", show_envvar=True,
              help="Accepted connections in all; at the cap the longest-silent one makes room.")
@click.option("--max-connections-per-source", type=click.IntRange(min=1),
              default=DEFAULT_MAX_CONNECTIONS_PER_SOURCE, show_default=True,
              envvar="SAFENET_MAX_CONNECTIONS_PER_SOURCE", show_envvar=True,
              help="Accepted connections from one source address (loopback: all of them).")
@click.option("--max-buffered-mib", type=click.IntRange(min=1), default=DEFAULT_MAX_BUFFERED >> 20,
              show_default=True, envvar="SAFENET_MAX_BUFFERED_MIB", show_envvar=True,
              help="MiB of unfinished incoming frames all connections may hold together.")
@click.option("--fault-rules", default=None, metavar="JSON", hidden=True,
              help="Transport fault rules in force from the start (the launcher restarting a node "
                   "while `cluster fault` rules are in force).")
def run_command(data_dir: Path, host: str, port: int, bootstrap: tuple[str, ...], replication: int,
                admin_key: str | None, lie: tuple[str, ...], idle_timeout: float,
                max_connections: int, max_connections_per_source: int,
                max_buffered_mib: int, fault_rules: str | None, listen: str | None,
                advertise: str | None) -> None:
    """Run one node until stopped (SIGTERM or Ctrl-C).

    The connection limits can also be set through the environment (SAFENET_IDLE_TIMEOUT and
    so on), which is how a test gives every node of a cluster short timeouts.
    """
    if listen is not None:
        try:
            host, port = parse_address(listen)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from None
        host = host.strip("[]")  # [::1]:7000
    if advertise is not None:
        try:
            advertised_host, _ = parse_address(advertise)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--advertise") from None
        if advertised_host.strip("[]") in WILDCARDS:
            raise click.BadParameter("peers cannot dial a wildcard address; give this machine's address",
                                     param_hint="--advertise")
    elif host in WILDCARDS:
        raise click.BadParameter(f"listening on {host} needs --advertise HOST:PORT (the address peers dial)",
                                 param_hint="--listen")
    if advertise is not None and port == 0:
        raise click.BadParameter("--advertise needs a fixed port to listen on (the port 0 picks is unknown "
                                 "beforehand)", param_hint="--listen")
    if replication < 1:
        raise click.BadParameter("must be at least 1", param_hint="--replication")
    admin = None
    if admin_key:
        try:
            admin = bytes.fromhex(admin_key)
        except ValueError:
            raise click.BadParameter("not hex", param_hint="--admin-key") from None
        if len(admin) != 32:
            raise click.BadParameter("a name is 64 hex digits", param_hint="--admin-key")
    rules = None
    if fault_rules:
        try:
            rules = json.loads(fault_rules)
            if not isinstance(rules, dict):
                raise ValueError("a JSON object of fault rules")
            FaultRules().configure(rules)  # checked here, so a bad one is a usage error
        except ValueError as exc:
            raise click.BadParameter(str(exc)[:200], param_hint="--fault-rules") from None
    data_dir.mkdir(parents=True, exist_ok=True)
    config = NodeConfig(replication=replication, lie=frozenset(lie))
    limits = {
        "idle_timeout": idle_timeout,
        "max_connections": max_connections,
        "max_connections_per_source": max_connections_per_source,
        "max_buffered": max_buffered_mib << 20,
    }
    with open(data_dir / LOG_FILE, "a", encoding="utf-8") as log_stream:
        with contextlib.suppress(KeyboardInterrupt):  # trio may turn a late SIGINT into this
            trio.run(lambda: serve(data_dir, host=host, port=port, bootstrap=list(bootstrap),
                                   config=config, admin_key=admin, log_stream=log_stream,
                                   limits=limits, fault_rules=rules, advertise=advertise))
    sys.exit(0)
