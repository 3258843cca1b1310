"""Screenshots of the console from a real run, for docs/: ``console-desktop.png`` (1280x800: a
channel with a pending tier-2 post open in its thread) and ``console-phone.png`` (390x844: the
same channel at a phone's width).

    .venv/bin/python -m tests.browser.screenshots [--out docs]

It starts a broker, stub supervisors and ``chatbox serve`` on a temporary workspace (the
harness, as the tests do), fills it with a short conversation, and drives Debian's chromium.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatbox.bus import wire
from tests.browser.console import CHROMIUM, DESKTOP, PHONE, log_in, missing, start_server, stub_config
from tests.fleet import ROOT, Fleet, wait_for


def scene(fleet: Fleet) -> int:
    """A small conversation; returns the seq of the pending tier-2 post."""
    fleet.write_config(stub_config(echo="reply", kim="reply", napper="reply"))
    fleet.client().call(wire.CreateChannel(name="#ops", topic="deploys and incidents"))
    for name, channels in (("echo", ["#general"]), ("kim", ["#general", "#ops"]),
                           ("napper", ["#general"])):
        fleet.add_agent(name, *channels, wake="mentions")
        fleet.start_supervisor(name)
    ask = fleet.post("#general", "@echo is the nightly build green?")
    wait_for(lambda: any(m.author == "echo" for m in fleet.read("#general")), timeout=20,
             what="echo's reply")
    kim = fleet.agent_client("kim")
    kim.call(wire.Post(channel="#general", in_reply_to=ask.seq,
                       body="Nightly is green on main; the arm64 job was flaky once."))
    pending = kim.call(wire.Post(channel="#general", kind="post", title="Deploy 2.4 to production",
                                 type="proposal", tier=2,
                                 body="All checks pass on 2.4.0-rc3. Deploy at 18:00 UTC?")).message
    kim.call(wire.Post(channel="#ops", body="disk on build-2 at 91%"))
    kim.call(wire.Escalate(reason="cannot reach the staging database", seq=ask.seq))
    fleet.client().call(wire.SetPaused(name="napper", paused=True, reason="night shift"))
    return pending.seq


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.browser.screenshots",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    reason = missing()
    if reason:
        print(f"screenshots: {reason}", file=sys.stderr)
        return 1
    from playwright.sync_api import sync_playwright

    fleet = Fleet()
    server = None
    try:
        fleet.start_broker()
        server, url = start_server(fleet)
        seq = scene(fleet)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            for name, viewport, thread in (("desktop", DESKTOP, True), ("phone", PHONE, False)):
                ctx = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE,
                                          device_scale_factor=1, color_scheme="light")
                page = ctx.new_page()
                log_in(page, url, fleet.admin_token)
                page.locator("#messages > li").filter(has_text="Deploy 2.4").wait_for()
                if thread:
                    page.get_by_role("button", name=f"Open the thread of #{seq}").click()
                    page.get_by_role("button", name=f"Approve #{seq}").wait_for()
                page.evaluate("() => document.activeElement && document.activeElement.blur()")
                page.mouse.move(viewport["width"] - 1, viewport["height"] - 1)
                path = args.out / f"console-{name}.png"
                page.screenshot(path=str(path))
                print(f"wrote {path}")
                ctx.close()
            browser.close()
    finally:
        if server is not None:
            server.kill()
        fleet.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
