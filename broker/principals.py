"""Principals and their tokens: hashed at rest, looked up per request, revocable at once."""

from __future__ import annotations

import hashlib
import time

import apsw

from chatbox.broker.context import Principal
from chatbox.broker.errors import Conflict, Invalid, NotFound, Unauthorized
from chatbox.bus import wire


def token_hash(token: str) -> str:
    # Tokens are 256 random bits, so a plain hash suffices (no password stretching needed).
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str, field: str = "name") -> str:
    if not wire.is_name(name):
        raise Invalid(f"{field} {name!r} is invalid: {wire.NAME_RULE}", field=field)
    return name


class Auth:
    """Token hash -> principal, cached; the cache is dropped on every revocation."""

    def __init__(self, db: apsw.Connection):
        self.db = db
        self._cache: dict[str, Principal] = {}

    def authenticate(self, token: str) -> Principal:
        h = token_hash(token)
        principal = self._cache.get(h)
        if principal is None:
            row = self.db.execute(
                "SELECT name, role FROM principals WHERE token_hash = ? AND revoked_at IS NULL",
                (h,)).fetchone()
            if row is None:
                raise Unauthorized("unknown or revoked token")
            principal = self._cache[h] = Principal(row[0], row[1])
        return principal

    def forget(self) -> None:
        self._cache.clear()


def create(db: apsw.Connection, name: str, role: str, token: str, *, engine: str | None = None,
           now: float | None = None) -> Principal:
    check_name(name)
    if db.execute("SELECT 1 FROM principals WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"principal {name!r} already exists", field="name")
    db.execute(
        "INSERT INTO principals(name, role, token_hash, engine, created_at) VALUES (?,?,?,?,?)",
        (name, role, token_hash(token), engine, time.time() if now is None else now))
    if role == "agent":
        db.execute("INSERT INTO agent_state(agent, updated_at) VALUES (?, ?)",
                   (name, time.time() if now is None else now))
    return Principal(name, role)


def get(db: apsw.Connection, name: str) -> tuple[str, str, str | None, float | None]:
    row = db.execute("SELECT name, role, engine, revoked_at FROM principals WHERE name = ?",
                     (name,)).fetchone()
    if row is None:
        raise NotFound(f"no principal named {name!r}", field="name")
    return row


def revoke(db: apsw.Connection, name: str, now: float) -> None:
    get(db, name)
    db.execute("UPDATE principals SET revoked_at = ?, token_hash = NULL WHERE name = ?",
               (now, name))
