"""``chatbox init``: the data directory, the database, the admin (human) principal and its token,
and the audit chain's key and first entry."""

from __future__ import annotations

import getpass
import os
import re
import shutil
import time

from chatbox.broker import audit, audit_start, channels, principals, seed_import
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.errors import Conflict, Invalid
from chatbox.broker.lock import WorkspaceLock
from chatbox.broker.store import Store
from chatbox.runtime.config import EXAMPLE
from chatbox.runtime.workspace import NAME_RE, Workspace, new_token, write_secret


def default_human() -> str:
    try:
        name = getpass.getuser().lower()
    except Exception:
        name = "human"
    name = re.sub(r"[^a-z0-9_.-]", "-", name).lstrip("_.-")[:64]
    return name if NAME_RE.match(name or "") else "human"


def init_workspace(ws: Workspace, human: str | None = None) -> str:
    """Create the workspace; return the admin token (shown once). Refuses an existing one."""
    return _create(ws, human, None, {})[0]


def import_seed(ws: Workspace, human: str | None, seed: str,
                renames: dict[str, str]) -> tuple[str, seed_import.Report]:
    """``chatbox init --import-agentchat SEED``: create the workspace with the seed workspace's
    channels, messages, subscriptions and cursors (``broker/seed_import.py``); return the admin
    token and what was carried over."""
    token, report = _create(ws, human, seed, renames)
    assert report is not None
    return token, report


def _create(ws: Workspace, human: str | None, seed: str | None,
            renames: dict[str, str]) -> tuple[str, seed_import.Report | None]:
    """A failed init leaves nothing behind: the data directory it made is removed."""
    human = human or default_human()
    if not NAME_RE.match(human):
        raise Invalid(f"human name {human!r} is invalid: use 1-64 of a-z 0-9 _ . -", field="human")
    if human == channels.SYSTEM:
        raise Invalid(f"{human!r} is reserved for the broker itself", field="human")
    if ws.is_initialised():
        raise Conflict(f"{ws.root} is already a chatbox workspace ({ws.db_path} exists)")
    source = seed_import.Seed(seed_import.locate(seed), human, renames) if seed else None
    report = seed_import.Report(source.path) if source else None
    made = not ws.data.exists()
    old = os.umask(0o077)
    try:
        if source:
            seed_import.check(source)
        ws.ensure_data_dir()
        with WorkspaceLock(ws.lock_path):
            store = Store(ws.db_path)
            token = new_token()
            try:
                with store.write():
                    now = time.time()
                    principals.create(store.db, human, "admin", token, now=now)
                    ctx = Ctx(store.db, Principal(human, "admin"), now)
                    channels.create_standing(ctx)
                    if source:
                        seed_import.load(ctx, ws, source, report)
                    for name, _ in channels.STANDING:
                        if channels.subscription(ctx, human, name) is None:
                            channels.subscribe(ctx, name, "full", "none", None)
                    audit_start.begin(ws, ctx)  # the audit key and the chain's first entry
                    if report:
                        audit.record(ctx, "import_agentchat", str(report.source), report.detail())
                write_secret(ws.admin_token_path, token)
            finally:
                store.close()
        if not ws.config_path.exists():
            ws.config_path.write_text(EXAMPLE, encoding="utf-8")
    except BaseException:
        if made:
            shutil.rmtree(ws.data, ignore_errors=True)
        raise
    finally:
        os.umask(old)
        if source:
            source.close()
    return token, report
