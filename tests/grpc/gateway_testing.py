"""Start `safenet es serve` as a real process for a test module, and stop it by its pid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

START_TIMEOUT = 90.0  # generous: two cores shared with other test runs


@dataclass
class RunningGateway:
    proc: subprocess.Popen[str]
    port: int
    uri: str


@contextmanager
def gateway(where: list[str], database: str, env: dict[str, str] | None = None) -> Iterator[RunningGateway]:
    """A gateway on a free port serving `database` of the network `where` names
    (["--mock", PATH] or ["--cluster", PATH]); SIGTERM, then SIGKILL, at the end."""
    command = [sys.executable, "-c", "from node.cli import main; main()", "es", "serve", "--port", "0", "--json",
               "--database", database, *where]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + START_TIMEOUT
        line = ""
        while not line:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line and (proc.poll() is not None or time.monotonic() > deadline):
                raise RuntimeError(f"the gateway did not start: {proc.stderr.read() if proc.stderr else ''}")
        facts = json.loads(line)
        yield RunningGateway(proc, facts["port"], f"kurrentdb://127.0.0.1:{facts['port']}?tls=false")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
