"""Fixtures of the web UI tests: the app in-process for the fast tests; for the browser
tests, `safenet ui` as a real process, headless Debian Chromium driven by Playwright, and
screenshots saved under test-artifacts/ui/.

Browser tests are marked `browser` and skip, saying why, when Playwright for Python or the
chromium binary is missing (CI installs both: see the report of issue 8). Every process a
test starts — the UI server, the browser, cluster nodes — is stopped in a `finally`.
"""

from __future__ import annotations

import pathlib
import sys

# As in tests/eventstore/conftest.py: keep `tests/` from shadowing the real packages.
ROOT = pathlib.Path(__file__).resolve().parents[2]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
for _name in ("node", "client", "eventstore"):
    _module = sys.modules.get(_name)
    if _module is not None and getattr(_module, "__file__", None) is None:
        del sys.modules[_name]

import contextlib  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from ui_testing import BROWSER_MISSING, CHROMIUM, CHROMIUM_ARGS, PAGE_TIMEOUT_MS, shot  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives the web UI in headless Chromium (skips without it)")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # Kept on the item so the page fixture can save a screenshot of a failed test.
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# ----------------------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for one test module (closed at its end, not left idling through
    the rest of the test run)."""
    if BROWSER_MISSING is not None:
        pytest.skip(f"browser test: {BROWSER_MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context and page; a screenshot is kept if the test fails."""
    from playwright.sync_api import expect

    expect.set_options(timeout=PAGE_TIMEOUT_MS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed:
            with contextlib.suppress(Exception):
                shot(page, f"FAILED-{request.node.name}")
        context.close()
