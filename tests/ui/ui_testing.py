"""Helpers of the web UI tests: run `safenet ui` as a process, find Chromium, save
screenshots. The fixtures built on them are in conftest.py."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

ARTIFACTS = ROOT / "test-artifacts" / "ui"
# The flags this machine needs (docs/ui.md): no sandbox as root, and no background
# networking, which this closed network refuses noisily.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SERVER_START_TIMEOUT = 30.0
SERVER_STOP_TIMEOUT = 10.0
PAGE_TIMEOUT_MS = 20_000  # generous: two cores shared with other test runs


def _find_chromium() -> str | None:
    """$SAFENET_CHROMIUM if set, else Debian's chromium."""
    wanted = os.environ.get("SAFENET_CHROMIUM")
    if wanted:
        return wanted if pathlib.Path(wanted).is_file() else None
    for found in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if found and pathlib.Path(found).is_file():
            return found
    return None


CHROMIUM = _find_chromium()


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install playwright)"
    if CHROMIUM is None:
        where = os.environ.get("SAFENET_CHROMIUM") or "/usr/bin/chromium"
        return f"no chromium at {where} (apt-get install chromium, or set SAFENET_CHROMIUM)"
    return None


BROWSER_MISSING = _browser_missing()
needs_browser = pytest.mark.skipif(BROWSER_MISSING is not None, reason=f"browser test: {BROWSER_MISSING}")


# ----------------------------------------------------------------------------- the server


@dataclass
class UiServer:
    url: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def run_ui(tmp: pathlib.Path, *args: str, name: str = "ui") -> Iterator[UiServer]:
    """`python -m eventstore.ui --port 0 ARGS` (the same command as `safenet ui`), until
    the block ends; its output goes to a file. Its client key lives in `tmp`."""
    log = tmp / f"{name}.log"
    env = dict(os.environ, SAFENET_CLIENT_KEY=str(tmp / "client.key"), PYTHONUNBUFFERED="1")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "eventstore.ui", "--port", "0", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
            start_new_session=True,
        )
    try:
        yield UiServer(_wait_for_url(process, log), process, log)
    finally:
        _stop(process)


def _wait_for_url(process: subprocess.Popen[bytes], log: pathlib.Path) -> str:
    """The URL the server prints once it listens (it was started with --port 0)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("safenet ui: serving "):
                return line.split()[3].rstrip("/")
        if process.poll() is not None:
            raise RuntimeError(f"safenet ui exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)  # polling a condition, bounded by the deadline
    raise RuntimeError(f"safenet ui did not start in {SERVER_START_TIMEOUT:g}s:\n{log.read_text(errors='replace')}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server's graceful stop), then SIGKILL to its whole session."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(SERVER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(SERVER_STOP_TIMEOUT)



def shot(page: Any, name: str) -> pathlib.Path:
    """Save a full-page screenshot as test-artifacts/ui/NAME.png."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
