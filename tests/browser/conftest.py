"""Fixtures of the browser tests: one headless Chromium per run, and per test a fresh workspace
with a broker, ``chatbox serve`` and a page that records every dialog and console error.

Skipped, with the reason printed, only where Chromium or Playwright is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from chatbox.harness import Process
from tests.browser.console import CHROMIUM, DESKTOP, missing, start_server
from tests.fleet import Fleet


@pytest.fixture(scope="module")
def browser():
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread while it
    is started, so it must be stopped before tests that run asyncio of their own."""
    reason = missing()
    if reason:
        print(f"browser tests skipped: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=15_000)  # a bound, not a pace: the machine may be busy
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Served:
    """A running console: its fleet, its server process and its base URL."""

    fleet: Fleet
    server: Process
    url: str


@pytest.fixture
def served():
    fleet = Fleet()
    running: Served | None = None
    try:
        fleet.start_broker()
        running = Served(fleet, *start_server(fleet))
        yield running
    finally:
        if running is not None:
            running.server.kill()  # the one running at the end (a test may have restarted it)
        fleet.close()


@dataclass
class Watched:
    """What a page did that no page of ours should: dialogs opened, console errors, page errors."""

    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


@pytest.fixture
def watched():
    return Watched()


@pytest.fixture
def page(context, watched):
    page = context.new_page()

    def dialog(d):
        watched.dialogs.append(f"{d.type}: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    page.on("console", lambda m: m.type == "error" and watched.errors.append(m.text))
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    return page
