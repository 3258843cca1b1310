"""``chatbox verify-audit``: the workspace's audit chain checked from its first entry.

It reads the database itself, read-only, with the broker's own verifier (through
``chatbox.broker.entry``), so it works whether the broker runs or not. Exit 0 with one line
saying how much was verified; exit 1 with one line on stderr naming the first bad entry (and
whether the broker already flagged it and started a new segment).
"""

from __future__ import annotations

import argparse

from chatbox.broker import entry
from chatbox.runtime import startup
from chatbox.runtime.exits import Exit

PROG = "chatbox verify-audit"


def parser() -> argparse.ArgumentParser:
    p = startup.Parser(prog=PROG, description="Verify the audit chain from its first entry; exit 1 "
                "naming the first bad entry.")
    p.add_argument("--workspace", help="workspace directory (default: CHATBOX_WORKSPACE, or the "
                   "nearest directory upward holding .chatbox/)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = startup.parse(parser(), argv)
    if isinstance(args, int):
        return args
    try:
        ws, _ = startup.begin(PROG, args.workspace, config=False)
    except startup.Startup as exc:
        return startup.report(exc)
    ok, line = entry.verify_audit(ws)
    if not ok:
        startup.say(PROG, line)
        return Exit.FAILED
    print(line)
    return Exit.OK
