"""Who is calling: a principal's bearer token, or the console's session cookie standing for one.

``Authorization: Bearer <token>`` is what scripts and MCP hosts send. The console logs in once
(``POST /v1/session`` with a token, checked with ``Whoami``) and gets an opaque session id in an
``HttpOnly; SameSite=Strict`` cookie; the token itself stays in this process's memory, never in
the browser, and ``DELETE /v1/session`` forgets it. Sessions live as long as the server process
(a restarted server asks the console to log in again), and at most ``MAX_SESSIONS`` of them.

Nothing here decides what a principal may do: every call goes to the broker with the caller's
own token, and a revoked token is refused there at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict

from starlette.requests import HTTPConnection

from chatbox.bus import wire
from chatbox.http.bridge import Bridge
from chatbox.http.problems import ProblemError, unauthorized

COOKIE = "chatbox_session"
MAX_SESSIONS = 10_000
MAX_TOKEN = 256


class Caller:
    """A request's credentials: the token, and whether it came from the session cookie."""

    __slots__ = ("token", "cookie")

    def __init__(self, token: str, cookie: bool):
        self.token = token
        self.cookie = cookie

    @property
    def key(self) -> str:
        """A name for this token that is not the token (for caches and session owners)."""
        return hashlib.sha256(self.token.encode()).hexdigest()


class Sessions:
    """Session id -> token, in memory, the oldest dropped past ``MAX_SESSIONS``."""

    def __init__(self) -> None:
        self._by_id: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def open(self, token: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._by_id[sid] = token
            while len(self._by_id) > MAX_SESSIONS:
                self._by_id.popitem(last=False)
        return sid

    def token(self, sid: str) -> str | None:
        with self._lock:
            return self._by_id.get(sid)

    def close(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)

    def drop_token(self, token: str) -> None:
        with self._lock:
            for sid in [s for s, t in self._by_id.items() if t == token]:
                del self._by_id[sid]


def bearer(conn: HTTPConnection) -> str | None:
    """The bearer token of the Authorization header; a malformed header is a refusal."""
    header = conn.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    if len(value) > MAX_TOKEN or not value.isprintable():
        raise unauthorized("the bearer token is malformed")
    return value


def caller(conn: HTTPConnection, sessions: Sessions) -> Caller:
    """The request's credentials, or ``ProblemError`` 401. A bearer header wins over a cookie."""
    token = bearer(conn)
    if token is not None:
        return Caller(token, cookie=False)
    sid = conn.cookies.get(COOKIE)
    if sid:
        token = sessions.token(sid)
        if token is not None:
            return Caller(token, cookie=True)
        raise unauthorized("the session has ended (logged out, or the server restarted): "
                           "log in again")
    raise unauthorized()


async def whoami(bridge: Bridge, token: str) -> wire.PrincipalResult:
    """The principal behind ``token``, asked of the broker (401 for an unknown or revoked one)."""
    try:
        return await bridge.call(token, wire.Whoami())
    except ProblemError as exc:
        if exc.code == "unauthorized":
            raise unauthorized("the token is not a principal's (unknown or revoked)") from None
        raise


class Known:
    """Tokens the broker recognised in the last ``TTL`` seconds, so that a request with no
    principal is refused (401) before its input is even looked at, without a round trip per
    request. This gates only; every call still carries the token, and the broker refuses a
    revoked one at once."""

    TTL = 5.0
    MAX = 4096

    def __init__(self, bridge: Bridge):
        self.bridge = bridge
        self._until: OrderedDict[str, float] = OrderedDict()

    async def check(self, token: str) -> None:
        now = time.monotonic()
        until = self._until.get(token)
        if until is not None and until > now:
            return
        await whoami(self.bridge, token)
        self._until[token] = now + self.TTL
        self._until.move_to_end(token)
        while len(self._until) > self.MAX:
            self._until.popitem(last=False)

    def forget(self, token: str) -> None:
        self._until.pop(token, None)


def cookie_header(sid: str) -> str:
    return f"{COOKIE}={sid}; HttpOnly; SameSite=Strict; Path=/"


def clear_cookie_header() -> str:
    return f"{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
