"""The MCP tool catalogue (DESIGN §6): names, one-line descriptions, precise input schemas.

A leaf of the adapter: no I/O. Each tool's arguments are a msgspec Struct built from the wire's
bounded types (``wire.ChannelName``, ``wire.Body``, ``wire.Title``, ``wire.Limit``, …), and its
JSON Schema is generated from that Struct (``msgspec.json.schema_components``) — so a bound is
declared once, on the wire, and the schema a host sees is the check the adapter runs.
``validate()`` checks one call's arguments with ``msgspec.convert`` before anything reaches the
broker, and speaks the violation as one sentence naming the field. Identity is the adapter's: no
schema declares an identity or a token, and the seed's legacy arguments (``agent_name``,
``session_token``, ``auth_token``) are taken off before validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, get_args, get_origin, get_type_hints

import msgspec
from msgspec import UNSET, Meta, UnsetType

from chatbox.bus import wire

MAX_TIMEOUT_MS = 60_000
MAX_TEXT = wire.MAX_RESOLUTION  # a reason, a comment, a resolution
MAX_CHANNELS = 64
LISTEN_MAX_MSGS = 10  # the seed's default for listen
INBOX_MAX_MSGS = 50   # inbox (ours) returns a turn's worth at once
LEGACY_ARGS = ("agent_name", "session_token", "auth_token")

# ------------------------------------------------------------------ argument types
Id = Annotated[int, Meta(ge=1)]
Body = Annotated[wire.Body, Meta(min_length=1)]
Text = Annotated[str, Meta(min_length=1, max_length=MAX_TEXT)]
View = Annotated[wire.View, Meta(
    description="headlines: titles only; digest: bodies cut to 280 chars; full")]
Wake = Annotated[wire.WakeMode, Meta(
    description="What wakes you: all messages, @mentions and replies, or nothing")]
Timeout = Annotated[int, Meta(ge=0, le=MAX_TIMEOUT_MS, description="Longest wait in ms")]
Channels = Annotated[list[wire.ChannelName], Meta(max_length=MAX_CHANNELS)]


class _Args(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class HelloArgs(_Args):
    name: Annotated[str, Meta(description="Your agent name (must be yours)")]
    phase: Annotated[str, Meta(max_length=64,
                               description="Where you are, e.g. start, working, done")]
    default_channels: Annotated[Channels, Meta(
        description="Channels to subscribe to; a missing one is opened (#phase-*: standing)")]


class ChatArgs(_Args):
    channel: wire.ChannelName
    body: Annotated[Body, Meta(description="Text; @name mentions someone")]


class StartPostArgs(_Args):
    channel: wire.ChannelName
    title: Annotated[wire.Title, Meta(min_length=1)]
    description: Annotated[wire.Body, Meta(description="The post's body")]
    type: Annotated[wire.PostType, Meta(description="e.g. question, proposal, task, report")]
    tier: UnsetType | Annotated[wire.Tier, Meta(
        description="2: held until a human approves; default 0")] = UNSET


class ReplyArgs(_Args):
    post_id: Annotated[Id, Meta(description="The post's id")]
    body: Body


class PostIdArgs(_Args):
    post_id: Id


class ListenArgs(_Args, kw_only=True):
    channels: Annotated[list[wire.ChannelName], Meta(min_length=1, max_length=MAX_CHANNELS)]
    view: View
    since_id: UnsetType | Annotated[int, Meta(
        ge=0, description="Only messages after this id and after your last ack")] = UNSET
    timeout_ms: Timeout
    max_msgs: Annotated[wire.Limit, Meta(description="Most messages returned")] = LISTEN_MAX_MSGS


class SubscribeArgs(_Args):
    channel: wire.ChannelName
    view: UnsetType | View = UNSET
    wake: UnsetType | Wake = UNSET


class ChannelArgs(_Args):
    channel: wire.ChannelName


class NoArgs(_Args):
    pass


class ApproveArgs(_Args):
    post_id: Id
    comment: UnsetType | Annotated[str, Meta(max_length=MAX_TEXT)] = UNSET


class DenyArgs(_Args):
    post_id: Id
    reason: Text


class ClosePostArgs(_Args):
    post_id: Id
    resolution: Text


class MessageIdArgs(_Args):
    message_id: Id


class AckArgs(_Args):
    channel: wire.ChannelName
    up_to_id: Annotated[wire.Id, Meta(description="0 changes nothing and answers last_read_id")]


class InboxArgs(_Args):
    max_msgs: Annotated[wire.Limit, Meta(description="Most messages returned")] = INBOX_MAX_MSGS


class WaitArgs(_Args):
    timeout_ms: Timeout


class EscalateArgs(_Args):
    reason: Text
    post_id: UnsetType | Annotated[Id, Meta(description="The message it is about")] = UNSET


class SearchArgs(_Args):
    query: Annotated[str, Meta(min_length=1, max_length=500)]
    channel: UnsetType | wire.ChannelName = UNSET
    limit: UnsetType | wire.SearchLimit = UNSET


class DecisionsArgs(_Args):
    channel: UnsetType | wire.ChannelName = UNSET
    limit: UnsetType | wire.SearchLimit = UNSET


def input_schema(args: type[_Args]) -> dict:
    """The JSON Schema of a tool's arguments, generated from their Struct (no title, no refs)."""
    (_,), components = msgspec.json.schema_components([args])
    schema = dict(components[args.__name__])
    schema.pop("title", None)
    schema.pop("description", None)
    for name, hint in get_type_hints(args, include_extras=True).items():
        values = _literal(hint)
        prop = schema["properties"].get(name, {})
        if values and set(prop.get("enum", ())) == set(values):
            prop["enum"] = list(values)  # the Literal's own order (msgspec sorts), e.g. views
    return schema


def _literal(hint: object) -> tuple | None:
    """The values of the Literal inside an annotated or optional hint, in declared order."""
    if get_origin(hint) is Literal:
        return get_args(hint)
    for inner in get_args(hint):
        found = _literal(inner)
        if found:
            return found
    return None


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    args: type[_Args]
    read_only: bool = False
    # broker field name -> this tool's argument name, for refusals that name a field
    fields: dict[str, str] = field(default_factory=dict)
    schema: dict = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schema", input_schema(self.args))


_POST_FIELDS = {"seq": "post_id", "in_reply_to": "post_id"}

TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("hello", "Say who you are at the start of work and subscribe to your channels, "
             "opening missing ones.", HelloArgs, fields={"channel": "default_channels"}),
    ToolSpec("chat", "Post a chat message to a channel.", ChatArgs),
    ToolSpec("start_post", "Open a thread: a titled post others reply to. Tier 2 needs a "
             "human's approval.", StartPostArgs, fields={"body": "description"}),
    ToolSpec("reply", "Reply in a post's thread (replies are one level deep).", ReplyArgs,
             fields=_POST_FIELDS),
    ToolSpec("get_post", "Read a post and all its replies.", PostIdArgs, read_only=True,
             fields=_POST_FIELDS),
    ToolSpec("listen", "Read new messages from others in channels you subscribe to; waits up "
             "to timeout_ms if there are none.", ListenArgs, read_only=True,
             fields={"limit": "max_msgs", "since": "since_id", "channel": "channels"}),
    ToolSpec("subscribe", "Subscribe to a channel (or change how you follow it).",
             SubscribeArgs),
    ToolSpec("unsubscribe", "Stop following a channel.", ChannelArgs),
    ToolSpec("rooms", "List the channels you can see, with unread counts.", NoArgs,
             read_only=True),
    ToolSpec("approve", "Approve a pending tier-2 post (humans only).", ApproveArgs,
             fields={"seq": "post_id", "reason": "comment"}),
    ToolSpec("deny", "Deny a pending tier-2 post (humans only).", DenyArgs,
             fields={"seq": "post_id"}),
    ToolSpec("pin_post", "Pin one of your posts.", PostIdArgs, fields=_POST_FIELDS),
    ToolSpec("unpin_post", "Unpin one of your posts.", PostIdArgs, fields=_POST_FIELDS),
    ToolSpec("close_post", "Close one of your posts with its resolution.", ClosePostArgs,
             fields=_POST_FIELDS),
    ToolSpec("resolve_message", "Mark one of your messages resolved.", MessageIdArgs,
             fields={"seq": "message_id", "post_id": "message_id"}),
    ToolSpec("unresolve_message", "Reopen one of your resolved messages.", MessageIdArgs,
             fields={"seq": "message_id", "post_id": "message_id"}),
    ToolSpec("ack", "Mark a channel read up to a message id you were given.", AckArgs,
             fields={"up_to": "up_to_id"}),
    ToolSpec("inbox", "Messages from others not yet acked, in all your channels, oldest first.",
             InboxArgs, read_only=True, fields={"limit": "max_msgs"}),
    ToolSpec("wait", "Block until a message for you arrives (or timeout_ms passes); returns it.",
             WaitArgs, read_only=True),
    ToolSpec("escalate", "Ask a human for help or a decision (posts to #alerts).", EscalateArgs,
             fields={"seq": "post_id"}),
    ToolSpec("search", "Full-text search of messages in your channels.", SearchArgs,
             read_only=True),
    ToolSpec("agents", "The agent roster with each agent's state (ASLEEP, WAKING, BUSY).",
             NoArgs, read_only=True),
    ToolSpec("decisions", "Recent approvals and denials.", DecisionsArgs, read_only=True),
)

BY_NAME: dict[str, ToolSpec] = {t.name: t for t in TOOLS}
CORE = frozenset({"hello", "chat", "start_post", "reply", "get_post", "listen", "inbox", "wait",
                  "ack", "escalate", "rooms", "search"})
TOOLSETS = {"all": frozenset(BY_NAME), "core": CORE}

# A tool error's code: the wire's, or "unavailable" (the broker cannot be reached).
ToolCode = wire.ErrorCode | Literal["unavailable"]


class ToolError(Exception):
    """A tool call that fails: a stable code, one sentence, and the argument at fault if any."""

    def __init__(self, code: ToolCode, message: str, field: str | None = None):
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
    """Check ``args`` against the tool's argument Struct; raise ToolError naming the bad field."""
    spec = BY_NAME[name]
    try:
        msgspec.convert(args, spec.args)
    except msgspec.ValidationError as exc:
        why = wire.explain(exc, args, spec.schema)
        raise ToolError(why.code, why.message, why.field) from None
    return args
