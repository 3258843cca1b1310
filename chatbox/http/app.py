"""The Starlette application of ``chatbox serve``: what is mounted where, and what it shares.

    /                  the console's index.html          (no token: code, not data)
    /console/<file>    the console's other files         (no token)
    /healthz           liveness                          (no token)
    /v1/...            the API (``api.py``)              bearer token or session cookie
    /metrics           Prometheus (``metrics.py``)       bearer token or session cookie
    /mcp               MCP over Streamable HTTP          bearer token
    /hello, /chat, …   the seed's routes (``seed.py``)   bearer token or session cookie

Everything passes the :class:`~chatbox.http.guard.Guard` first (Host, Origin, body size,
security headers). The :class:`Server` holds what the routes share: the bus bridge, the event
hub, the sessions, the MCP adapters, the metrics.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from chatbox.bus.endpoints import Endpoints
from chatbox.http import api, mcp_http, metrics, openapi, seed
from chatbox.http.auth import Known, Sessions
from chatbox.http.bridge import Bridge
from chatbox.http.guard import Guard
from chatbox.http.hub import Hub
from chatbox.http.problems import ProblemError, problem
from chatbox.http.routes import endpoint
from chatbox.http.stream import Fetcher
from chatbox.http.tools import Adapters

log = structlog.get_logger("http")

CONSOLE = Path(__file__).resolve().parent / "console"


class Server:
    """What every route of one server process shares."""

    def __init__(self, endpoints: Endpoints, version: str):
        self.version = version
        self.metrics = metrics.Metrics()
        self.bridge = Bridge(endpoints)
        self.hub = Hub(endpoints, observe=self.metrics.observe)
        self.sessions = Sessions()
        self.known = Known(self.bridge)
        self.bridge.on_refused = self.refused
        self.fetcher = Fetcher(self.bridge)
        self.adapters = Adapters(self.bridge, endpoints)
        self.openapi = openapi.encoded(api.OPS, version)

    def refused(self, token: str) -> None:
        """The broker refused ``token`` (revoked, unknown): forget it everywhere."""
        self.known.forget(token)
        self.sessions.drop_token(token)


async def _index(request: Request) -> Response:
    index = CONSOLE / "index.html"
    if not index.is_file():
        return problem(404, "not_found", "the web console is not installed with this server")
    return FileResponse(index, media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


class _Console(StaticFiles):
    """The console's files, revalidated on each load (an upgrade is seen at once)."""

    async def get_response(self, path: str, scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except Exception:  # starlette raises HTTPException for a missing file
            return problem(404, "not_found", f"no console file {path[:100]!r}")
        response.headers["Cache-Control"] = "no-cache"
        return response


async def _not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 404)
    if status == 405:
        return problem(405, "method", f"{request.method} is not allowed on {request.url.path}")
    return problem(404, "not_found", f"no route {request.url.path[:200]!r}")


async def _failed(request: Request, exc: Exception) -> Response:
    if isinstance(exc, ProblemError):
        return exc.response()
    log.exception("request_failed", path=request.url.path[:200])
    return problem(500, "internal", "the server failed on this request; its log says more")


def build(server: Server, hosts: frozenset[str], on_ready=None) -> Guard:
    """The ASGI application: the routes behind the guard. ``on_ready`` is called once the
    lifespan has started everything."""
    manager, mcp_app = mcp_http.build(server, server.version)
    routes = [Route(op.path, endpoint(op, server), methods=[op.method]) for op in api.OPS]
    routes += [
        Route("/", _index, methods=["GET"]),
        Mount("/console", app=_Console(directory=CONSOLE, check_dir=False)),
        Route("/metrics", metrics.route(server), methods=["GET"]),
        Route("/mcp", mcp_app, methods=["GET", "POST", "DELETE"]),
        *seed.routes(server),
    ]

    @asynccontextmanager
    async def lifespan(app):
        server.hub.start()
        async with mcp_http.running(manager):
            if on_ready is not None:
                on_ready()
            try:
                yield
            finally:
                await server.adapters.close()
                server.hub.stop()
                server.bridge.close()

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={404: _not_found, 405: _not_found, Exception: _failed})
    return Guard(app, hosts, record=server.metrics.request)
