"""The seed's HTTP routes, kept for the seed's clients — now behind a principal's token.

``POST /hello``, ``/chat``, ``/start_post``, ``/reply``, ``/listen``, ``/subscribe``,
``/unsubscribe``, ``/approve``, ``/deny``, ``/pin_post``, ``/unpin_post``, ``/close_post``,
``/resolve_message``, ``/unresolve_message`` take the MCP tool's arguments as their JSON body and
answer its result; ``GET /rooms`` and ``GET /get_post?id=N`` likewise; ``GET /health`` says who
the token is. Each runs the MCP tool of the same name (``tools.Adapters``), so bodies and result
fields are the tools' own, and the seed's ``agent_name``/``session_token`` are tolerated as the
tools tolerate them. Errors are problem documents whose ``code`` is the tool's.
"""

from __future__ import annotations

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from chatbox.http.auth import caller, whoami
from chatbox.http.guard import read_body
from chatbox.http.problems import ProblemError
from chatbox.http.routes import respond

POSTED = ("hello", "chat", "start_post", "reply", "listen", "subscribe", "unsubscribe",
          "approve", "deny", "pin_post", "unpin_post", "close_post", "resolve_message",
          "unresolve_message")


async def _body(request: Request) -> dict:
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ProblemError("invalid", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ProblemError("invalid", "the request body must be a JSON object of the tool's "
                           "arguments")
    return data


def _tool_route(server, tool: str):
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions)
            args = await _body(request)
            return respond(await server.adapters.call(who.token, tool, args))
        except ProblemError as exc:
            return exc.response()

    run.__name__ = f"seed_{tool}"
    return run


def _rooms(server):
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions)
            return respond(await server.adapters.call(who.token, "rooms", {}))
        except ProblemError as exc:
            return exc.response()
    return run


def _get_post(server):
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions)
            raw = request.query_params.get("id") or request.query_params.get("post_id") or ""
            if not raw.isdigit() or not raw.isascii():
                raise ProblemError("invalid", "get_post needs ?id=N, a post's number", "id")
            return respond(await server.adapters.call(who.token, "get_post",
                                                      {"post_id": int(raw)}))
        except ProblemError as exc:
            return exc.response()
    return run


def _health(server):
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions)
            me = await whoami(server.bridge, who.token)
            return respond({"status": "ok", "agent": me.name, "role": me.role})
        except ProblemError as exc:
            return exc.response()
    return run


def routes(server) -> list[Route]:
    out = [Route(f"/{tool}", _tool_route(server, tool), methods=["POST"]) for tool in POSTED]
    out += [Route("/rooms", _rooms(server), methods=["GET"]),
            Route("/get_post", _get_post(server), methods=["GET"]),
            Route("/health", _health(server), methods=["GET"])]
    return out
