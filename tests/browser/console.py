"""A real console to drive: a broker, stub supervisors and ``chatbox serve`` on one workspace.

Shared by the browser tests and ``screenshots.py``. ``chatbox serve --port 0`` picks a free port
and logs its ``url`` on the "ready" line (the harness waits on it). The browser is Debian's
``chromium`` driven by Playwright through its executable path: Playwright's own browser download
is not used, so nothing here needs the network.
"""

from __future__ import annotations

import sys
from pathlib import Path

from chatbox.harness import Process
from tests.fleet import Fleet

CHROMIUM = Path("/usr/bin/chromium")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"chromium is not installed at {CHROMIUM} (`make browser` installs it as root)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


def stub_config(gated: tuple[str, ...] = (), **agents: str) -> str:
    """chatbox.toml with one stub agent per keyword: name=behaviour. The ``gated`` agents pass
    ``CHATBOX_STUB_GATE`` to their turns: each waits at ``Fleet.gate()``."""
    out = ["[limits]", "kill_grace_seconds = 0.5", ""]
    for name, behaviour in agents.items():
        out += [f"[agents.{name}]", 'engine = "stub"', f'stub = {{ behaviour = "{behaviour}" }}',
                "limits = { max_turn_seconds = 30.0 }"]
        out += ['env = ["CHATBOX_STUB_GATE"]', ""] if name in gated else [""]
    return "\n".join(out)


def start_server(fleet: Fleet, port: int = 0, name: str = "serve") -> tuple[Process, str]:
    """``chatbox serve`` on ``port`` of 127.0.0.1 (0: a free one), once it logged "ready";
    its base URL."""
    proc = fleet.spawn(name, [sys.executable, "-m", "chatbox", "serve", "--port", str(port)])
    try:
        ready = proc.wait_ready(30)
    except Exception:
        proc.kill()
        raise
    return proc, str(ready["url"]).rstrip("/")


def log_in(page, url: str, token: str) -> None:
    """Open the console and log in with ``token``; returns once the channels show."""
    page.goto(url + "/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Log in").click()
    page.locator("#channel-name").filter(has_text="#general").wait_for()
