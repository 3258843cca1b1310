"""Every error code a reply can carry: one closed set, produced by the broker, read by clients.

A leaf: the broker's error classes, its frame and store refusals, and the clients that map a
refusal to an exit code or a tool error all use ``ErrorCode``; a code outside it fails to decode.
"""

from __future__ import annotations

from typing import Literal, get_args

ErrorCode = Literal[
    "invalid",       # a value is malformed or out of its bounds
    "too_large",     # a body, title or other text is over its size bound
    "not_found",     # the channel, message or principal named does not exist
    "forbidden",     # the principal is known but may not do this
    "unauthorized",  # the token is unknown or revoked
    "conflict",      # the request contradicts the current state (a stale epoch, ...)
    "bad_frame",     # the frame is not a request of the protocol
    "version",       # the frame speaks another protocol version
    "store",         # the database refused or failed to commit
    "locked",        # another broker holds the workspace
    "internal",      # a fault of the broker's own; its log says more
]

ERROR_CODES: frozenset[str] = frozenset(get_args(ErrorCode))

TRANSIENT: frozenset[str] = frozenset({"store"})
"""The refusals that may pass: the same request, sent again with the same idempotency key, can
land later (a commit that failed on a full or failing disk). Every other code is final: sending
the same request again gets the same answer. The one place this is decided; a client raises
``chatbox.bus.errors.Transient`` for these and ``Refused`` for the rest."""


def is_transient(code: str) -> bool:
    return code in TRANSIENT
