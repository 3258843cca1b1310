"""The ChatBox wire protocol: every frame on the bus, as msgspec Structs in tagged unions.

A leaf package: ``chatbox.bus`` imports nothing else of ours. MessagePack on the wire, one encoder
and one typed decoder per direction, built once. This module holds the requests, the envelope,
the events and the codecs, and re-exports the rest of the wire — the data shapes
(``shapes``), the results and replies (``results``), the bounds (``bounds``) and the error codes
(``codes``) — so every caller writes ``wire.X``.

Frames::

    request   DEALER -> ROUTER   [ payload ]            ROUTER sees [ routing-id, payload ]
              payload = Envelope{v, rid, token, idem, req: Request}
              (the broker reads the head first, then the request: version and token come first)
    reply     ROUTER -> DEALER   [ payload ]            payload = ResultReply{rid, result}
                                                              | ErrorReply{rid, error}
                                                    (tagged by reply = "result" | "error")
    event     PUB -> SUB         [ topic, payload ]     topic = b"<kind>/<name>\\0", payload = Event

Topics end in a NUL byte so that a SUB prefix never matches a longer name (``wake/kim`` must not
receive ``wake/kimi``): ``chan/#general\\0``, ``wake/kimi\\0``, ``agent/kimi\\0``.

Events are hints, never content: a channel event names the channel and the seq, and a reader
fetches the message itself with an authenticated ``Read`` — so the PUB socket leaks no text past
the read ACL. A wake names the agent and its epoch; the database stays the truth.

Every request that changes state may carry ``idem``, a key made by the client: a retry with the
same key is answered with the first result and never applied twice. :data:`EFFECTS` says, for
every request type, whether it reads, writes, or only moves a delivery mark.

Request fields carry the bounds of DESIGN §3 as ``msgspec.Meta`` (see ``bounds``): decoding a
request checks them, and :func:`refusal` says which field broke which bound.
"""

from __future__ import annotations

from functools import cache
from typing import Literal, get_args

import msgspec

# The rest of the wire, re-exported so that every caller writes ``wire.X``.
from chatbox.bus.bounds import (  # noqa: F401
    CHANNEL_RE, CHANNEL_RULE, LINE_PATTERN, MAX_BODY, MAX_LIMIT, MAX_RESOLUTION, MAX_SEARCH,
    MAX_TITLE, MAX_FRAME, MAX_ID, MAX_QUEUED_REPLIES, MAX_TOPIC, NAME_RE, NAME_RULE, TYPE_RE,
    TYPE_RULE, Body, ChannelName, Id, Limit, Line, Name, PostType,
    Resolution, SearchLimit, Tier, Title, Topic, Violation, explain, is_channel, is_name)
from chatbox.bus.codes import ERROR_CODES, ErrorCode  # noqa: F401
from chatbox.bus.results import (  # noqa: F401
    AckResult, AgentCreated, AgentResult, AgentsResult, ChannelResult, ClaimResult, Done, Error,
    ErrorReply, HelloResult, MessageResult, MessagesResult, PrincipalResult, Reply, ReportResult,
    Result, ResultBody, ResultReply, RoomsResult, StatusResult, SubscriptionResult, ThreadResult)
from chatbox.bus.shapes import (  # noqa: F401
    AgentInfo, AgentStateName, ChannelInfo, ChannelKind, FlagAction, Kind, Message, Outcome,
    Subscription, TurnInfo, View, WakeMode, _Frame)

PROTOCOL_VERSION = 2  # 2: a reply is a tagged union, result or error

# Liveness over tcp:// only: libzmq's own ZMTP heartbeats find a peer behind a dead link. Over
# ipc:// a dead peer closes its socket at once, so there are none (an idle fleet sleeps).
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000
HEARTBEAT_TTL_MS = 30_000


# --------------------------------------------------------------------------- requests

class Request(_Frame, tag_field="op"):
    pass


class Whoami(Request, tag="whoami"):
    pass


class Attach(Request, tag="attach"):
    """An MCP server started for a turn says so: the broker then knows the turn's agent
    connected (a turn of a real CLI whose agent never did is recorded failed)."""

    turn: Id


class Status(Request, tag="status"):
    pass


class Post(Request, tag="post"):
    channel: ChannelName | None = None
    body: Body = ""
    kind: Literal["chat", "post"] = "chat"
    title: Title | None = None
    type: PostType | None = None
    tier: Tier = 0
    in_reply_to: Id | None = None
    turn: Id | None = None


class Read(Request, tag="read"):
    channel: ChannelName
    since: Id = 0
    limit: Limit = 100


class GetPost(Request, tag="get_post"):
    seq: Id


class Ack(Request, tag="ack"):
    channel: ChannelName
    up_to: Id


class Inbox(Request, tag="inbox"):
    limit: Limit = 100


class Subscribe(Request, tag="subscribe"):
    channel: ChannelName
    view: View = "full"
    wake: WakeMode = "all"
    agent: Name | None = None


class Unsubscribe(Request, tag="unsubscribe"):
    channel: ChannelName
    agent: Name | None = None


class Rooms(Request, tag="rooms"):
    pass


class CreateChannel(Request, tag="create_channel"):
    name: ChannelName
    topic: Topic = ""
    kind: Literal["adhoc", "private", "canary", "standing"] = "adhoc"


class SetFlag(Request, tag="set_flag"):
    seq: Id
    action: FlagAction
    resolution: Resolution | None = None


class Search(Request, tag="search"):
    query: str
    channel: ChannelName | None = None
    limit: SearchLimit = 20


class AddAgent(Request, tag="add_agent"):
    name: Name
    subscribe: list[ChannelName] = []
    wake: WakeMode = "all"
    view: View = "full"
    engine: str | None = None


class ListAgents(Request, tag="list_agents"):
    pass


class ShowAgent(Request, tag="show_agent"):
    name: Name


class SetPaused(Request, tag="set_paused"):
    name: Name
    paused: bool
    reason: Resolution | None = None


class Revoke(Request, tag="revoke"):
    name: Name


class Sync(Request, tag="sync"):
    """Ask the broker to publish a SyncEvent on ``sync/<nonce>``: once it arrives, every topic
    this client subscribed to before asking is live at the broker (no slow-joiner gap)."""

    nonce: str


class Decide(Request, tag="decide"):
    """A human approves or denies a pending tier-2 post."""

    seq: Id
    approve: bool
    reason: Resolution | None = None


class Escalate(Request, tag="escalate"):
    """Ask a human: a tier-2 post in #alerts naming the asker, the reason and the evidence."""

    reason: Body
    seq: Id | None = None
    turn: Id | None = None


class Decisions(Request, tag="decisions"):
    channel: ChannelName | None = None
    limit: SearchLimit = 20


class Pending(Request, tag="pending"):
    """What waits for a human: the tier-2 posts still pending (escalations among them) in the
    channels the caller may read, oldest first after ``since``."""

    since: Id = 0
    limit: Limit = 100


class Hello(Request, tag="hello"):
    """A supervisor announces itself for its agent (after subscribing to its wakes)."""

    agent: Name
    supervisor: Line
    pid: int | None = None
    host: Line | None = None
    turn: Id | None = None
    epoch: Id | None = None


class Claim(Request, tag="claim"):
    agent: Name
    supervisor: Line
    epoch: Id


class TurnReport(Request, tag="turn_report"):
    agent: Name
    supervisor: Line
    turn: Id
    epoch: Id
    outcome: Outcome
    exit_code: int | None = None
    digest: str = ""
    excerpt: str = ""
    output: str = ""
    reply: str | None = None
    engine_error: bool = False
    cause: str | None = None       # the CLI's own words for what went wrong (or stderr's)
    needs_connection: bool = False  # the agent works through the chatbox tools: it must connect
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


RequestBody = (
    Whoami | Attach | Status | Post | Read | GetPost | Ack | Inbox | Subscribe | Unsubscribe | Rooms
    | CreateChannel | SetFlag | Search | AddAgent | ListAgents | ShowAgent | SetPaused | Revoke
    | Sync | Decide | Escalate | Decisions | Pending | Hello | Claim | TurnReport
)

# What each request does to the broker's state — the one classification, used by the client
# (which keys what writes) and the broker (which replays a keyed request's first answer):
#   reads  changes nothing stored (Sync publishes an event, and stores nothing);
#   marks  only moves the reader's delivery marks up to what it was shown (Read, Inbox), or
#          marks the reader's turn connected (Attach): the same however often it is applied,
#          so a retry needs no key and no stored answer (an Inbox retried shows what is
#          unacked then: nothing was acked on the strength of an answer never received);
#   writes anything else: carries an idempotency key, applied once, its first answer replayed.
Effect = Literal["reads", "marks", "writes"]
EFFECTS: dict[type[Request], Effect] = {
    Whoami: "reads", Attach: "marks", Status: "reads", GetPost: "reads", Rooms: "reads", Search: "reads",
    ListAgents: "reads", ShowAgent: "reads", Decisions: "reads", Pending: "reads", Sync: "reads",
    Read: "marks", Inbox: "marks",
    Post: "writes", Ack: "writes", Subscribe: "writes", Unsubscribe: "writes",
    CreateChannel: "writes", SetFlag: "writes", AddAgent: "writes", SetPaused: "writes",
    Revoke: "writes", Decide: "writes", Escalate: "writes", Hello: "writes", Claim: "writes",
    TurnReport: "writes",
}
assert set(EFFECTS) == set(get_args(RequestBody)), "every request type is classified once"
# Requests that carry no idempotency key: those that do not write.
READ_ONLY: frozenset[type[Request]] = frozenset(t for t, e in EFFECTS.items() if e != "writes")


def keyed(req: Request | type[Request]) -> bool:
    """Does this request carry an idempotency key (is it a write)?"""
    return EFFECTS[req if isinstance(req, type) else type(req)] == "writes"


class _EnvelopeFields(_Frame):
    v: int
    rid: int
    token: str
    idem: str | None = None


class Envelope(_EnvelopeFields, kw_only=True):
    """A request as a client sends it."""

    req: RequestBody


class EnvelopeHead(_EnvelopeFields, kw_only=True):
    """A request as the broker first reads it: the request itself still raw, so the version and
    token are checked (and the rid known) before the request is decoded with its bounds."""

    req: msgspec.Raw


REQUEST_TYPES: dict[str, type[Request]] = {t.__struct_config__.tag: t
                                           for t in get_args(RequestBody)}


@cache
def request_schema(kind: type[Request]) -> tuple[dict, dict]:
    """The JSON Schema of one request type and its components, for :func:`refusal`."""
    (schema,), defs = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    return schema, defs


def refusal(exc: msgspec.ValidationError, raw: bytes) -> tuple[type[Request], Error] | None:
    """When the request ``raw`` failed to decode only because a field broke its bound (a name's
    pattern, a body's length, a closed set): the request's type, and the refusal naming the
    field. None when the request itself is malformed (a ``bad_frame``)."""
    try:
        data = msgspec.msgpack.decode(raw)
    except msgspec.DecodeError:
        return None
    kind = REQUEST_TYPES.get(data.get("op")) if isinstance(data, dict) else None
    if kind is None:
        return None
    schema, defs = request_schema(kind)
    why = explain(exc, data, schema, defs)
    if not why.bound or not why.path:
        return None
    return kind, Error(code=why.code, message=why.message, field=str(why.path[0]))


# --------------------------------------------------------------------------- events

class Event(_Frame, tag_field="ev"):
    pass


class MessageEvent(Event, tag="message"):
    channel: str
    seq: int
    author: str
    kind: Kind


class WakeEvent(Event, tag="wake"):
    agent: str
    epoch: int


class AgentEvent(Event, tag="agent"):
    agent: str
    state: AgentStateName
    epoch: int
    paused: bool = False
    turn: int | None = None
    cause: str = ""
    previous: AgentStateName | None = None  # the state it left (the same for a pause or resume)


class SyncEvent(Event, tag="sync"):
    nonce: str


EventBody = MessageEvent | WakeEvent | AgentEvent | SyncEvent


# --------------------------------------------------------------------------- codecs

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode
envelope_decoder = msgspec.msgpack.Decoder(EnvelopeHead)  # then request_decoder on its req
request_decoder = msgspec.msgpack.Decoder(RequestBody)
reply_decoder = msgspec.msgpack.Decoder(Reply)
event_decoder = msgspec.msgpack.Decoder(EventBody)


def topic(kind: str, name: str) -> bytes:
    """The PUB/SUB topic frame for ``kind`` ("chan", "wake", "agent") and a name."""
    return f"{kind}/{name}\0".encode()


def channel_topic(channel: str) -> bytes:
    return topic("chan", channel)


def wake_topic(agent: str) -> bytes:
    return topic("wake", agent)


def agent_topic(agent: str) -> bytes:
    return topic("agent", agent)


def sync_topic(nonce: str) -> bytes:
    return topic("sync", nonce)
