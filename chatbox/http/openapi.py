"""The OpenAPI 3.1 document of ``/v1``, generated from the operations and their types.

Schemas come from ``msgspec.json.schema_components`` over the very Structs the routes decode
and encode (``shapes``), so a bound declared on the wire is the bound the document states and
the check the route runs. Every operation declares its success and the problem statuses it may
answer (``problems.ERROR_STATUSES``), each an RFC 9457 document.
"""

from __future__ import annotations

import re

import msgspec

from chatbox.bus import wire
from chatbox.bus.bounds import NAME_PATTERN
from chatbox.http import shapes
from chatbox.http.problems import ERROR_STATUSES, PROBLEM_TYPE, TITLES
from chatbox.http.routes import JSON, Op

REF = "#/components/schemas/{name}"
PATHS = {
    "channel": {"type": "string", "description": "a channel: %23general, or general (the # "
                "implied)", "pattern": r"^#?[a-z0-9][a-z0-9_.-]{0,63}$"},
    "seq": {"type": "integer", "minimum": 0, "maximum": wire.MAX_ID},
    "name": {"type": "string", "pattern": NAME_PATTERN},
}


def _ref(kind: type) -> dict:
    return {"$ref": REF.format(name=kind.__name__)}


def _parameters(op: Op, schemas: dict) -> list[dict]:
    params = [{"name": n, "in": "path", "required": True, "schema": PATHS[n]}
              for n in re.findall(r"\{(\w+)\}", op.path)]
    query = schemas.get(op.query.__name__, {})
    required = set(query.get("required", ()))
    for name, schema in query.get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": name in required,
                       "schema": schema})
    return params


def _responses(op: Op) -> dict:
    if op.media == "text/event-stream":
        ok = {"description": "a stream of `message` and `agent` events",
              "content": {op.media: {"schema": {"type": "string"}}}}
    elif op.result is None:
        ok = {"description": "the OpenAPI document",
              "content": {JSON: {"schema": {"type": "object"}}}}
    else:
        ok = {"description": "success", "content": {JSON: {"schema": _ref(op.result)}}}
    out = {str(op.status): ok}
    for status in ERROR_STATUSES:
        out[str(status)] = {"description": TITLES[status],
                            "content": {PROBLEM_TYPE: {"schema": _ref(shapes.Problem)}}}
    return out


def document(ops: list[Op], version: str) -> dict:
    kinds = {shapes.Problem}
    for op in ops:
        kinds.update(k for k in (op.result, op.body, op.query) if k is not None)
    _, schemas = msgspec.json.schema_components(sorted(kinds, key=lambda k: k.__name__),
                                                ref_template=REF)
    paths: dict[str, dict] = {}
    for op in ops:
        item: dict = {"operationId": op.id, "summary": op.summary,
                      "parameters": _parameters(op, schemas), "responses": _responses(op)}
        if op.auth:
            item["security"] = [{"bearer": []}, {"session": []}]
        else:
            item["security"] = []
        if op.body is not None:
            item["requestBody"] = {"required": op.body is not shapes.Empty,
                                   "content": {JSON: {"schema": _ref(op.body)}}}
        paths.setdefault(op.path, {})[op.method.lower()] = item
    query_names = {op.query.__name__ for op in ops}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ChatBox HTTP API", "version": version,
                 "description": "Every route but /healthz takes a principal's bearer token (or "
                 "the console's session cookie) and acts as that principal, with its role and "
                 "ACL exactly as over the bus. Errors are RFC 9457 problem documents."},
        "paths": paths,
        "components": {
            "schemas": {k: v for k, v in schemas.items() if k not in query_names},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "chatbox_session"},
            },
        },
    }


def encoded(ops: list[Op], version: str) -> bytes:
    return msgspec.json.encode(document(ops, version))
