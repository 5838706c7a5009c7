"""`safenet es serve`: the KurrentDB-compatible gRPC gateway (docs/grpc.md)."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from node.clikit import cluster_option, fail, json_option, mock_option


@click.command(name="serve")
@click.option("--port", type=click.IntRange(0, 65535), default=2113, show_default=True,
              help="The port to listen on (0: any free one, printed at start).")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--database", default="default", show_default=True,
              help="The event-store database the gateway serves (made if it does not exist).")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Serve TLS with this PEM certificate chain (with --tls-key); insecure without.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The PEM private key of --tls-cert.")
@json_option
@mock_option
@cluster_option
def serve(port: int, host: str, database: str, tls_cert: Path | None, tls_key: Path | None,
          as_json: bool, mock: str | None, cluster: str | None) -> None:
    """Serve DATABASE to KurrentDB (EventStoreDB) gRPC clients: connect with
    kurrentdb://HOST:PORT?tls=false. Runs until interrupted."""
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    # grpc's C core logs failures on stderr itself; the command says them in its own line.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    from .portal import StorePortal  # grpc is imported only by this command
    from .server import Gateway

    tls = None if tls_cert is None or tls_key is None else (tls_key.read_bytes(), tls_cert.read_bytes())
    portal = StorePortal(cluster, mock, database).start()
    try:
        gateway = Gateway(portal, host, port, tls).start()
    except OSError as exc:
        portal.stop()
        fail(str(exc))
    except BaseException:
        portal.stop()
        raise
    facts: dict[str, Any] = {"host": host, "port": gateway.port, "database": database, "tls": tls is not None}
    scheme = f"kurrentdb://{host}:{gateway.port}?tls={'true' if tls else 'false'}"
    click.echo(json.dumps({**facts, "uri": scheme}) if as_json else f"serving {database} at {scheme}")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    stopped.wait()
    gateway.stop()
    portal.stop()
