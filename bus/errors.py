"""Errors a bus client raises; each carries the broker's code and sentence where there is one."""

from __future__ import annotations


class BusError(Exception):
    """Base of every bus failure."""

    code = "bus_error"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def __str__(self) -> str:
        return self.message


class Unreachable(BusError):
    """The broker did not answer within the deadline (down, or not started)."""

    code = "unreachable"


class Refused(BusError):
    """The broker answered with a refusal: bad input, no permission, a conflict."""

    code = "refused"


class Transient(Refused):
    """A refusal that may pass (``chatbox.bus.codes.TRANSIENT``): nothing was stored, and the
    same request with the same idempotency key may land later. Still a ``Refused``, so a caller
    that does not retry treats it as one."""

    code = "transient"


class Unauthorized(Refused):
    """The token is unknown or revoked."""

    code = "unauthorized"


class ProtocolError(BusError):
    """A frame could not be decoded."""

    code = "protocol"


class EndpointError(BusError):
    """An endpoint is malformed, unsafe, or too long for the platform."""

    code = "endpoint"
