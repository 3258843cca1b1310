"""The broker's one entry point for the clients (docs/ARCHITECTURE.md, "allowed arrows").

Two client commands need the broker's own code, and reach it only through this module:
``chatbox init`` creates the database before any broker runs, and ``chatbox broker`` (like
``chatbox demo``) runs one. ``chatbox tail --trail`` reads the dispatch trail the broker writes,
with the broker's own reader, and ``chatbox verify-audit`` checks the audit chain on a read-only
connection with the broker's own verifier. Every other client speaks to the broker over the bus
alone.

The CLI imports this module at its top, so the arrow is plain to see; the broker's store and
loop are loaded only when one of these functions is called, so ``chatbox post`` does not pay
for apsw and the dispatcher at every start (about 0.2 s here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chatbox.broker.errors import BrokerError
from chatbox.runtime.workspace import Workspace

__all__ = ["BrokerError", "default_human", "import_seed", "init_workspace", "parse_trail_line",
           "run", "trail_path", "verify_audit"]


def default_human() -> str:
    """The human principal ``chatbox init`` creates by default: the OS user, as a valid name."""
    from chatbox.broker import bootstrap
    return bootstrap.default_human()


def init_workspace(ws: Workspace, human: str) -> str:
    """Create the data directory, the database, the admin token; returns the admin token."""
    from chatbox.broker import bootstrap
    return bootstrap.init_workspace(ws, human)


def import_seed(ws: Workspace, human: str, seed: str, renames: list[str]) -> tuple[str, Any]:
    """``init`` with a seed workspace's state carried over; the admin token and the report."""
    from chatbox.broker import bootstrap, seed_import
    return bootstrap.import_seed(ws, human, seed, seed_import.parse_renames(renames))


def run(argv: list[str]) -> int:
    """``broker`` with these arguments, in this process; its exit code."""
    from chatbox.broker import main
    return main.main(argv)


def trail_path(ws: Workspace) -> Path:
    """The workspace's dispatch trail, ``dispatch_comms.jsonl``."""
    from chatbox.broker import trail
    return trail.trail_path(ws.root)


def parse_trail_line(line: bytes) -> dict[str, Any] | None:
    """One whole line of the trail as its object; None for a torn or foreign line."""
    from chatbox.broker import trail
    return trail.parse_line(line)


def verify_audit(ws: Workspace) -> tuple[bool, str]:
    """The whole audit chain of ``ws`` checked from its first entry: (ok, one line saying so,
    or naming the first bad entry)."""
    from chatbox.broker import audit_start
    return audit_start.verify_workspace(ws)
