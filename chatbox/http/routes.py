"""How one API operation is declared and run: its types, its path, and the checks around it.

An :class:`Op` names its method and path template, its query and body types and its result
type (``shapes``); the OpenAPI document is generated from the same list. ``endpoint(op)`` is
the Starlette endpoint: it finds the caller (401 without a token), decodes the path, the query
and the body with the declared types (400 naming the field that broke its bound), runs the
operation, and encodes its result. Every refusal is a problem document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from chatbox.bus import wire
from chatbox.http import shapes
from chatbox.http.auth import Caller, caller
from chatbox.http.guard import read_body
from chatbox.http.problems import ProblemError

_encoder = msgspec.json.Encoder()
JSON = "application/json"


@dataclass
class Ctx:
    """One request as an operation sees it."""

    request: Request
    srv: Any                      # the app's Server (chatbox.http.app): bridge, hub, sessions
    caller: Caller | None
    path: dict[str, Any]
    query: Any
    body: Any

    async def call(self, req: wire.Request, rename: dict[str, str] | None = None) -> Any:
        """One bus request as the caller's own principal."""
        assert self.caller is not None
        return await self.srv.bridge.call(self.caller.token, req, rename)


@dataclass(frozen=True)
class Op:
    method: str
    path: str
    id: str
    summary: str
    run: Callable[[Ctx], Awaitable[Any]]
    result: type | None
    body: type | None = None
    query: type = shapes.NoQuery
    status: int = 200
    auth: bool = True
    media: str = JSON


# --------------------------------------------------------------------------- decoding

def channel_param(raw: str) -> str:
    """A channel from a path: ``%23general`` or plain ``general`` (the ``#`` is implied)."""
    name = raw if raw.startswith("#") else "#" + raw
    if not wire.is_channel(name):
        raise ProblemError("invalid", f"channel {raw[:80]!r} is invalid: {wire.CHANNEL_RULE}",
                           "channel")
    return name


def seq_param(raw: str) -> int:
    if not raw.isdigit() or not raw.isascii() or int(raw) > wire.MAX_ID:
        raise ProblemError("invalid", f"seq {raw[:40]!r} is not a message number (0 to "
                           f"{wire.MAX_ID})", "seq")
    return int(raw)


def name_param(raw: str) -> str:
    if not wire.is_name(raw):
        raise ProblemError("invalid", f"name {raw[:80]!r} is invalid: {wire.NAME_RULE}", "name")
    return raw


PATH_PARAMS: dict[str, Callable[[str], Any]] = {
    "channel": channel_param, "seq": seq_param, "name": name_param}


@cache
def _schema(kind: type) -> tuple[dict, dict]:
    (schema,), defs = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    return schema, defs


def refusal(exc: msgspec.ValidationError, data: Any, kind: type) -> ProblemError:
    schema, defs = _schema(kind)
    why = wire.explain(exc, data, schema, defs)
    return ProblemError(why.code, why.message, why.field)


def decode_query(request: Request, kind: type) -> Any:
    data = {k: v for k, v in request.query_params.items() if k in kind.__struct_fields__}
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise refusal(exc, data, kind) from None


async def decode_body(request: Request, kind: type) -> Any:
    raw = await read_body(request)
    if not raw.strip():
        raw = b"{}"
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ProblemError("invalid", "the request body is not JSON") from None
    if not isinstance(data, dict):
        raise ProblemError("invalid", "the request body must be a JSON object")
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise refusal(exc, data, kind) from None


def respond(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type=JSON, headers=headers)


def endpoint(op: Op, server: Any) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            who = caller(request, server.sessions) if op.auth else None
            if who is not None:
                await server.known.check(who.token)
            path = {k: PATH_PARAMS[k](v) for k, v in request.path_params.items()}
            query = decode_query(request, op.query)
            body = await decode_body(request, op.body) if op.body is not None else None
            out = await op.run(Ctx(request, server, who, path, query, body))
        except ProblemError as exc:
            return exc.response()
        return out if isinstance(out, Response) else respond(out, op.status)

    run.__name__ = op.id
    return run
