"""``chatbox init``: the data directory, the database, the admin (human) principal and its token,
and the audit chain's key and first entry."""

from __future__ import annotations

import getpass
import os
import re
import time

from chatbox.broker import audit_start, channels, principals
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
    human = human or default_human()
    if not NAME_RE.match(human):
        raise Invalid(f"human name {human!r} is invalid: use 1-64 of a-z 0-9 _ . -", field="human")
    if human == channels.SYSTEM:
        raise Invalid(f"{human!r} is reserved for the broker itself", field="human")
    if ws.is_initialised():
        raise Conflict(f"{ws.root} is already a chatbox workspace ({ws.db_path} exists)")
    old = os.umask(0o077)
    try:
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
                    for name, _ in channels.STANDING:
                        channels.subscribe(ctx, name, "full", "none", None)
                    audit_start.begin(ws, ctx)  # the audit key and the chain's first entry
                write_secret(ws.admin_token_path, token)
            finally:
                store.close()
        if not ws.config_path.exists():
            ws.config_path.write_text(EXAMPLE, encoding="utf-8")
    finally:
        os.umask(old)
    return token
