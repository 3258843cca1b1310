"""The MCP tool catalogue (DESIGN §6): names, one-line descriptions, precise input schemas.

A leaf of the adapter: no I/O. ``validate()`` checks one call's arguments against its schema
before anything reaches the broker, and speaks the violation as one sentence naming the field.
Identity is the adapter's: no schema declares an identity or a token, and the seed's legacy
arguments (``agent_name``, ``session_token``, ``auth_token``) are taken off before validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema

MAX_BODY = 65_536          # characters here; the broker also bounds the UTF-8 bytes
MAX_TITLE = 200
MAX_TIMEOUT_MS = 60_000
LEGACY_ARGS = ("agent_name", "session_token", "auth_token")

# ------------------------------------------------------------------ schema fragments
_CHANNEL = {"type": "string", "pattern": "^#[a-z0-9][a-z0-9_.-]{0,63}$",
            "description": "Channel name, e.g. #general"}
_ID = {"type": "integer", "minimum": 1}
_BODY = {"type": "string", "minLength": 1, "maxLength": MAX_BODY}
_VIEW = {"type": "string", "enum": ["headlines", "digest", "full"],
         "description": "headlines: titles only; digest: bodies cut to 280 chars; full"}
_WAKE = {"type": "string", "enum": ["all", "mentions", "none"],
         "description": "What wakes you: all messages, @mentions and replies, or nothing"}
_TIMEOUT = {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT_MS,
            "description": "Longest wait in ms"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


def _desc(fragment: dict, text: str) -> dict:
    return {**fragment, "description": text}


def _obj(required: list[str], **props: dict) -> dict:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    schema["additionalProperties"] = False
    return schema


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    schema: dict
    read_only: bool = False
    # broker field name -> this tool's argument name, for refusals that name a field
    fields: dict[str, str] = field(default_factory=dict)


_POST_FIELDS = {"seq": "post_id", "in_reply_to": "post_id"}

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("hello", "Say who you are at the start of work and subscribe to your channels.",
             _obj(["name", "phase", "default_channels"],
                  name={"type": "string", "description": "Your agent name (must be yours)"},
                  phase={"type": "string", "maxLength": 64,
                         "description": "Where you are, e.g. start, working, done"},
                  default_channels={"type": "array", "items": _CHANNEL, "maxItems": 64,
                                    "description": "Channels to subscribe to"}),
             fields={"channel": "default_channels"}),
    ToolSpec("chat", "Post a chat message to a channel.",
             _obj(["channel", "body"], channel=_CHANNEL,
                  body=_desc(_BODY, "Text; @name mentions someone"))),
    ToolSpec("start_post", "Open a thread: a titled post others reply to. Tier 2 needs a "
             "human's approval.",
             _obj(["channel", "title", "description", "type"], channel=_CHANNEL,
                  title={"type": "string", "minLength": 1, "maxLength": MAX_TITLE},
                  description={"type": "string", "maxLength": MAX_BODY,
                               "description": "The post's body"},
                  type={"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$",
                        "description": "e.g. question, proposal, task, report"},
                  tier={"type": "integer", "enum": [0, 1, 2],
                        "description": "2: held until a human approves; default 0"}),
             fields={"body": "description"}),
    ToolSpec("reply", "Reply in a post's thread (replies are one level deep).",
             _obj(["post_id", "body"], post_id=_desc(_ID, "The post's id"), body=_BODY),
             fields=_POST_FIELDS),
    ToolSpec("get_post", "Read a post and all its replies.",
             _obj(["post_id"], post_id=_ID), read_only=True, fields=_POST_FIELDS),
    ToolSpec("listen", "Read new messages from others in channels you subscribe to; waits up "
             "to timeout_ms if there are none.",
             _obj(["channels", "view", "timeout_ms"],
                  channels={"type": "array", "items": _CHANNEL, "minItems": 1, "maxItems": 64},
                  view=_VIEW,
                  since_id=_desc({"type": "integer", "minimum": 0},
                                 "Only messages after this id; default: after your last ack"),
                  timeout_ms=_TIMEOUT, max_msgs=_LIMIT),
             read_only=True,
             fields={"limit": "max_msgs", "since": "since_id", "channel": "channels"}),
    ToolSpec("subscribe", "Subscribe to a channel (or change how you follow it).",
             _obj(["channel"], channel=_CHANNEL, view=_VIEW, wake=_WAKE)),
    ToolSpec("unsubscribe", "Stop following a channel.", _obj(["channel"], channel=_CHANNEL)),
    ToolSpec("rooms", "List the channels you can see, with unread counts.", _obj([]),
             read_only=True),
    ToolSpec("approve", "Approve a pending tier-2 post (humans only).",
             _obj(["post_id"], post_id=_ID,
                  comment={"type": "string", "maxLength": 2000}),
             fields={"seq": "post_id", "reason": "comment"}),
    ToolSpec("deny", "Deny a pending tier-2 post (humans only).",
             _obj(["post_id", "reason"], post_id=_ID,
                  reason={"type": "string", "minLength": 1, "maxLength": 2000}),
             fields={"seq": "post_id"}),
    ToolSpec("pin_post", "Pin one of your posts.", _obj(["post_id"], post_id=_ID),
             fields=_POST_FIELDS),
    ToolSpec("unpin_post", "Unpin one of your posts.", _obj(["post_id"], post_id=_ID),
             fields=_POST_FIELDS),
    ToolSpec("close_post", "Close one of your posts with its resolution.",
             _obj(["post_id", "resolution"], post_id=_ID,
                  resolution={"type": "string", "minLength": 1, "maxLength": 2000}),
             fields=_POST_FIELDS),
    ToolSpec("resolve_message", "Mark one of your messages resolved.",
             _obj(["message_id"], message_id=_ID),
             fields={"seq": "message_id", "post_id": "message_id"}),
    ToolSpec("unresolve_message", "Reopen one of your resolved messages.",
             _obj(["message_id"], message_id=_ID),
             fields={"seq": "message_id", "post_id": "message_id"}),
    ToolSpec("ack", "Mark a channel read up to a message id you were given.",
             _obj(["channel", "up_to_id"], channel=_CHANNEL, up_to_id=_ID),
             fields={"up_to": "up_to_id"}),
    ToolSpec("inbox", "Messages from others not yet acked, in all your channels, oldest first.",
             _obj([], max_msgs=_LIMIT), read_only=True, fields={"limit": "max_msgs"}),
    ToolSpec("wait", "Block until a message for you arrives (or timeout_ms passes); returns it.",
             _obj(["timeout_ms"], timeout_ms=_TIMEOUT), read_only=True),
    ToolSpec("escalate", "Ask a human for help or a decision (posts to #alerts).",
             _obj(["reason"], reason={"type": "string", "minLength": 1, "maxLength": 2000},
                  post_id=_desc(_ID, "The message it is about")),
             fields={"seq": "post_id"}),
    ToolSpec("search", "Full-text search of messages in your channels.",
             _obj(["query"], query={"type": "string", "minLength": 1, "maxLength": 500},
                  channel=_CHANNEL, limit={**_LIMIT, "maximum": 200}),
             read_only=True),
    ToolSpec("agents", "The agent roster with each agent's state (ASLEEP, WAKING, BUSY).",
             _obj([]), read_only=True),
    ToolSpec("decisions", "Recent approvals and denials.",
             _obj([], channel=_CHANNEL, limit={**_LIMIT, "maximum": 200}), read_only=True),
)

BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
CORE = frozenset({"hello", "chat", "start_post", "reply", "get_post", "listen", "inbox", "wait",
                  "ack", "escalate", "rooms", "search"})
TOOLSETS = {"all": frozenset(BY_NAME), "core": CORE}

_VALIDATORS = {t.name: jsonschema.Draft202012Validator(t.schema) for t in TOOLS}


class ToolError(Exception):
    """A tool call that fails: a stable code, one sentence, and the argument at fault if any."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def as_dict(self) -> dict:
        out = {"status": "error", "code": self.code, "message": self.message}
        if self.field:
            out["field"] = self.field
        return out


def take_legacy(args: dict) -> dict:
    """Remove the seed's identity arguments; return them (tokens are dropped unread)."""
    legacy = {}
    for key in LEGACY_ARGS:
        if key in args:
            value = args.pop(key)
            if key == "agent_name":
                legacy[key] = value
    return legacy


def validate(name: str, args: dict) -> dict:
    """Check ``args`` against the tool's schema; raise ToolError naming the first bad field."""
    validator = _VALIDATORS[name]
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is not None:
        raise _explain(error)
    return args


def _explain(error: jsonschema.ValidationError) -> ToolError:
    """One sentence a model can act on; never echoes the (possibly huge) value."""
    path = ".".join(str(p) for p in error.absolute_path)
    where = path or "arguments"
    kind, limit = error.validator, error.validator_value
    value = error.instance
    if kind == "required":
        missing = next((f for f in limit if f not in (value or {})), limit[0])
        return ToolError("invalid", f"{missing} is required", missing)
    if kind == "additionalProperties":
        extra = sorted(set(value) - set(error.schema.get("properties", {})))
        return ToolError("invalid", f"unknown argument {', '.join(extra)}",
                         extra[0] if extra else None)
    if kind == "maxLength":
        return ToolError("too_large", f"{where} is {len(value)} characters, over the limit of "
                         f"{limit}", path or None)
    if kind == "minLength":
        return ToolError("invalid", f"{where} is empty", path or None)
    if kind == "enum":
        options = ", ".join(str(v) for v in limit)
        return ToolError("invalid", f"{where} must be one of {options}", path or None)
    if kind in ("minimum", "maximum"):
        side = "at least" if kind == "minimum" else "at most"
        return ToolError("invalid", f"{where} must be {side} {limit}, got {value}", path or None)
    if kind == "type":
        return ToolError("invalid", f"{where} must be of type {limit}", path or None)
    if kind == "pattern":
        shown = value if len(value) <= 80 else value[:80] + "…"
        hint = error.schema.get("description", f"matching {limit}")
        return ToolError("invalid", f"{where} {shown!r} is invalid ({hint})", path or None)
    if kind in ("maxItems", "minItems"):
        side = "at most" if kind == "maxItems" else "at least"
        return ToolError("invalid", f"{where} must have {side} {limit} items", path or None)
    return ToolError("invalid", f"{where}: {error.message[:200]}", path or None)
