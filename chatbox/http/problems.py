"""Errors as RFC 9457 ``application/problem+json``: one clear sentence, the code, the field.

Every refusal the server gives — its own (no token, a bad Host, a body too large, input that
breaks a bound) and the broker's (forbidden, not found, conflict …) — is a :class:`ProblemError`
turned into one response here. The broker's code and sentence are kept as they are, so a user
reads the same words over HTTP as in the CLI and the MCP tools.
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

from chatbox.bus.errors import BusError, ProtocolError, Refused, Unreachable
from chatbox.http import shapes

PROBLEM_TYPE = "application/problem+json"

STATUS: dict[str, int] = {
    "invalid": 400, "bad_request": 400, "too_large": 413, "not_found": 404, "forbidden": 403,
    "unauthorized": 401, "conflict": 409, "store": 503, "unavailable": 503, "locked": 503,
    "host": 421, "origin": 403, "method": 405, "bad_frame": 502, "version": 502,
    "protocol": 502, "internal": 500,
}
TITLES: dict[int, str] = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large",
    421: "Misdirected Request", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}
# the statuses every operation of the API may answer with a problem (the OpenAPI document
# declares them, and no other)
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 421, 503)

_encoder = msgspec.json.Encoder()


class ProblemError(Exception):
    """A refusal to answer with a problem document."""

    def __init__(self, code: str, detail: str, field: str | None = None,
                 status: int | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = " ".join(detail.split())
        self.field = field
        self.status = status or STATUS.get(code, 400)

    def response(self) -> Response:
        return problem(self.status, self.code, self.detail, self.field)


def problem(status: int, code: str, detail: str, field: str | None = None) -> Response:
    body = shapes.Problem(type=f"urn:chatbox:problem:{code}", title=TITLES.get(status, "Error"),
                          status=status, detail=detail, code=code, field=field)
    headers = {"WWW-Authenticate": 'Bearer realm="chatbox"'} if status == 401 else None
    return Response(_encoder.encode(body), status_code=status, media_type=PROBLEM_TYPE,
                    headers=headers)


def from_bus(exc: BusError, rename: dict[str, str] | None = None) -> ProblemError:
    """A bus failure as the problem a user sees; ``rename`` maps a wire field to the API's."""
    field = (rename or {}).get(exc.field, exc.field) if exc.field else None
    if isinstance(exc, Unreachable):
        return ProblemError("unavailable", f"the broker is not reachable: {exc.message}")
    if isinstance(exc, ProtocolError):
        return ProblemError("protocol", exc.message)
    if isinstance(exc, Refused):
        return ProblemError(exc.code, exc.message, field)
    return ProblemError("internal", exc.message)


def unauthorized(detail: str = "this route needs a principal's token: send "
                 "'Authorization: Bearer <token>' or log in") -> ProblemError:
    return ProblemError("unauthorized", detail)
