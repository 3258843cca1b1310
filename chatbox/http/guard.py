"""The checks every request passes before any route sees it, and the headers every answer carries.

- ``Host`` must name the address the server is bound to (DNS rebinding: a page from
  ``evil.example`` that re-points its name at 127.0.0.1 still sends ``Host: evil.example``).
- A write (any method but GET/HEAD/OPTIONS) whose ``Origin`` is not the server's own is refused;
  a write made with the session cookie must carry an ``Origin`` at all (a browser's ``fetch``
  does), so a cross-site form can never ride the cookie. Scripts that send a bearer header and
  no ``Origin`` are not browsers and pass.
- A body announced over ``MAX_BODY`` bytes is refused before it is read; the routes also stop
  reading a streamed body past it (``read_body``).
- Every response carries the console's strict Content-Security-Policy, ``nosniff``,
  ``no-referrer`` and, unless a route said otherwise, ``Cache-Control: no-store``.

A pure ASGI middleware, so a server-sent-events stream passes through it unbuffered. It also
times every request for ``/metrics``, labelled by the route's template, never the raw path.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbox.http.auth import COOKIE
from chatbox.http.problems import ProblemError, problem

MAX_BODY = 256 * 1024  # bytes: a message body is at most 64 KiB of UTF-8, escaped in JSON
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(host: str, port: int, extra: list[str] = ()) -> frozenset[str]:
    """The ``Host`` values a request may carry for a server bound to ``host:port``."""
    names = ["127.0.0.1", "localhost", "[::1]"] if host in LOOPBACK else \
        [f"[{host}]" if ":" in host else host]
    names.extend(extra)
    return frozenset(f"{n}:{port}".lower() for n in names)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request's body, refused past ``limit`` bytes however it is sent."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProblemError("too_large", f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class Guard:
    def __init__(self, app: ASGIApp, hosts: frozenset[str],
                 record: Callable[[str, str, int, float], None] | None = None):
        self.app = app
        self.hosts = hosts
        self.record = record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers.extend(h for h in HEADERS if h[0] not in names)
                if b"cache-control" not in names:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            refusal = self.check(scope)
            if refusal is not None:
                await refusal.response()(scope, receive, send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
        finally:
            if self.record is not None:
                route = scope.get("route")
                label = getattr(route, "path", None) or "unmatched"
                self.record(scope["method"], label, status, time.perf_counter() - started)

    def check(self, scope: Scope) -> ProblemError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        host = headers.get("host", "").lower()
        if host not in self.hosts:
            return ProblemError("host", f"Host {host[:100]!r} is not this server's address; "
                                "use the URL it printed")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return ProblemError("too_large", f"the request body is over {MAX_BODY} bytes")
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{host}"
            if origin is not None and origin.lower() != own:
                return ProblemError("origin", f"a write from origin {origin[:100]!r} is refused: "
                                    "only this server's own pages may write")
            if origin is None and "authorization" not in headers \
                    and f"{COOKIE}=" in headers.get("cookie", ""):
                return ProblemError("origin", "a write made with the session cookie must carry "
                                    "this server's Origin")
        return None
