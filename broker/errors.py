"""Refusals the broker answers with. Each maps to a stable wire code; the message names the field."""

from __future__ import annotations

from typing import ClassVar

from chatbox.bus.codes import ErrorCode


class BrokerError(Exception):
    """Base of every broker refusal."""

    code: ClassVar[ErrorCode] = "internal"

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(BrokerError):
    """The request is malformed or a value is out of bounds."""

    code: ClassVar[ErrorCode] = "invalid"


class TooLarge(Invalid):
    """A body or title is over its size bound."""

    code: ClassVar[ErrorCode] = "too_large"


class NotFound(BrokerError):
    """The channel, message or principal named does not exist."""

    code: ClassVar[ErrorCode] = "not_found"


class Forbidden(BrokerError):
    """The principal is known but may not do this."""

    code: ClassVar[ErrorCode] = "forbidden"


class Unauthorized(BrokerError):
    """The token is unknown or revoked."""

    code: ClassVar[ErrorCode] = "unauthorized"


class Conflict(BrokerError):
    """The request contradicts the current state (a stale epoch, a second supervisor, ...)."""

    code: ClassVar[ErrorCode] = "conflict"


class StoreError(BrokerError):
    """The database cannot be opened or is of an unknown schema version."""

    code: ClassVar[ErrorCode] = "store"


class WorkspaceLocked(BrokerError):
    """Another broker holds this workspace's lock."""

    code: ClassVar[ErrorCode] = "locked"
