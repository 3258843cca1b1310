"""The ChatBox wire protocol: every frame on the bus, as msgspec Structs in tagged unions.

A leaf module: it imports nothing of ours. MessagePack on the wire, one encoder and one typed
decoder per direction, built once.

Frames::

    request   DEALER -> ROUTER   [ payload ]            ROUTER sees [ routing-id, payload ]
              payload = Envelope{v, rid, token, idem, req: Request}
    reply     ROUTER -> DEALER   [ payload ]            payload = Reply{rid, result | error}
    event     PUB -> SUB         [ topic, payload ]     topic = b"<kind>/<name>\\0", payload = Event

Topics end in a NUL byte so that a SUB prefix never matches a longer name (``wake/kim`` must not
receive ``wake/kimi``): ``chan/#general\\0``, ``wake/kimi\\0``, ``agent/kimi\\0``.

Events are hints, never content: a channel event names the channel and the seq, and a reader
fetches the message itself with an authenticated ``Read`` — so the PUB socket leaks no text past
the read ACL. A wake names the agent and its epoch; the database stays the truth.

Every request that changes state may carry ``idem``, a key made by the client: a retry with the
same key is answered with the first result and never applied twice.
"""

from __future__ import annotations

from typing import Literal

import msgspec

PROTOCOL_VERSION = 1

# Liveness over tcp:// only: libzmq's own ZMTP heartbeats find a peer behind a dead link. Over
# ipc:// a dead peer closes its socket at once, so there are none (an idle fleet sleeps).
HEARTBEAT_IVL_MS = 10_000
HEARTBEAT_TIMEOUT_MS = 30_000
HEARTBEAT_TTL_MS = 30_000

Kind = Literal["chat", "post", "reply", "decision", "escalation", "system"]
View = Literal["headlines", "digest", "full"]
WakeMode = Literal["all", "mentions", "none"]
ChannelKind = Literal["standing", "adhoc", "private", "canary"]
AgentStateName = Literal["ASLEEP", "WAKING", "BUSY"]
Outcome = Literal["ok", "failed", "timeout", "livelock", "gave_up", "lost", "vetoed"]
FlagAction = Literal["pin", "unpin", "close", "resolve", "unresolve"]


class _Frame(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


# --------------------------------------------------------------------------- data shapes

class Message(_Frame):
    """One stored message, as every interface shows it."""

    seq: int
    channel: str
    author: str
    kind: Kind
    body: str
    title: str | None = None
    type: str | None = None
    tier: int = 0
    in_reply_to: int | None = None
    mentions: list[str] = []
    chain: int = 0
    hop: int = 0
    turn: int | None = None
    pinned: bool = False
    status: str = "open"
    resolution: str | None = None
    created_at: float = 0.0
    redelivered: bool = False


class ChannelInfo(_Frame):
    name: str
    topic: str
    kind: ChannelKind
    created_by: str | None = None
    last_seq: int = 0
    last_activity: float | None = None
    unread: int = 0
    subscribed: bool = False
    view: View | None = None
    wake: WakeMode | None = None


class Subscription(_Frame):
    channel: str
    view: View
    wake: WakeMode
    last_read: int = 0


class TurnInfo(_Frame):
    id: int
    agent: str
    epoch: int
    outcome: str | None = None
    exit_code: int | None = None
    started_at: float = 0.0
    ended_at: float | None = None
    excerpt: str = ""
    batch: list[int] = []


class AgentInfo(_Frame):
    name: str
    state: AgentStateName
    epoch: int = 0
    paused: bool = False
    paused_reason: str | None = None
    engine: str | None = None
    subscriptions: list[Subscription] = []
    offsets: dict[str, int] = {}
    current_turn: int | None = None
    last_turn: TurnInfo | None = None
    supervisor: str | None = None
    revoked: bool = False


# --------------------------------------------------------------------------- requests

class Request(_Frame, tag_field="op"):
    pass


class Whoami(Request, tag="whoami"):
    pass


class Status(Request, tag="status"):
    pass


class Post(Request, tag="post"):
    channel: str | None = None
    body: str = ""
    kind: Literal["chat", "post"] = "chat"
    title: str | None = None
    type: str | None = None
    tier: int = 0
    in_reply_to: int | None = None
    turn: int | None = None


class Read(Request, tag="read"):
    channel: str
    since: int = 0
    limit: int = 100


class GetPost(Request, tag="get_post"):
    seq: int


class Ack(Request, tag="ack"):
    channel: str
    up_to: int


class Inbox(Request, tag="inbox"):
    limit: int = 100


class Subscribe(Request, tag="subscribe"):
    channel: str
    view: View = "full"
    wake: WakeMode = "all"
    agent: str | None = None


class Unsubscribe(Request, tag="unsubscribe"):
    channel: str
    agent: str | None = None


class Rooms(Request, tag="rooms"):
    pass


class CreateChannel(Request, tag="create_channel"):
    name: str
    topic: str = ""
    kind: Literal["adhoc", "private", "canary"] = "adhoc"


class SetFlag(Request, tag="set_flag"):
    seq: int
    action: FlagAction
    resolution: str | None = None


class Search(Request, tag="search"):
    query: str
    channel: str | None = None
    limit: int = 20


class AddAgent(Request, tag="add_agent"):
    name: str
    subscribe: list[str] = []
    wake: WakeMode = "all"
    view: View = "full"
    engine: str | None = None


class ListAgents(Request, tag="list_agents"):
    pass


class ShowAgent(Request, tag="show_agent"):
    name: str


class SetPaused(Request, tag="set_paused"):
    name: str
    paused: bool
    reason: str | None = None


class Revoke(Request, tag="revoke"):
    name: str


class Sync(Request, tag="sync"):
    """Ask the broker to publish a SyncEvent on ``sync/<nonce>``: once it arrives, every topic
    this client subscribed to before asking is live at the broker (no slow-joiner gap)."""

    nonce: str


class Decide(Request, tag="decide"):
    """A human approves or denies a pending tier-2 post."""

    seq: int
    approve: bool
    reason: str | None = None


class Escalate(Request, tag="escalate"):
    """Ask a human: a tier-2 post in #alerts naming the asker, the reason and the evidence."""

    reason: str
    seq: int | None = None
    turn: int | None = None


class Decisions(Request, tag="decisions"):
    channel: str | None = None
    limit: int = 20


class Hello(Request, tag="hello"):
    """A supervisor announces itself for its agent (after subscribing to its wakes)."""

    agent: str
    supervisor: str
    pid: int | None = None
    host: str | None = None
    turn: int | None = None
    epoch: int | None = None


class Claim(Request, tag="claim"):
    agent: str
    supervisor: str
    epoch: int


class TurnReport(Request, tag="turn_report"):
    agent: str
    supervisor: str
    turn: int
    epoch: int
    outcome: Outcome
    exit_code: int | None = None
    digest: str = ""
    excerpt: str = ""
    output: str = ""
    reply: str | None = None
    engine_error: bool = False


RequestBody = (
    Whoami | Status | Post | Read | GetPost | Ack | Inbox | Subscribe | Unsubscribe | Rooms
    | CreateChannel | SetFlag | Search | AddAgent | ListAgents | ShowAgent | SetPaused | Revoke
    | Sync | Decide | Escalate | Decisions | Hello | Claim | TurnReport
)

# Requests that only read: never carry an idempotency key, never retried as writes.
READ_ONLY: frozenset[type] = frozenset({Whoami, Status, Read, GetPost, Rooms, Search, ListAgents,
                                        ShowAgent, Decisions, Sync})


class Envelope(_Frame):
    v: int
    rid: int
    token: str
    req: RequestBody
    idem: str | None = None


# --------------------------------------------------------------------------- results

class Result(_Frame, tag_field="kind"):
    pass


class Done(Result, tag="done"):
    pass


class PrincipalResult(Result, tag="principal"):
    name: str
    role: str


class MessageResult(Result, tag="message"):
    message: Message


class MessagesResult(Result, tag="messages"):
    messages: list[Message]
    last_seq: int = 0
    more: bool = False


class ThreadResult(Result, tag="thread"):
    post: Message
    replies: list[Message]


class AckResult(Result, tag="ack"):
    channel: str
    last_read: int


class SubscriptionResult(Result, tag="subscription"):
    agent: str
    subscription: Subscription


class RoomsResult(Result, tag="rooms"):
    channels: list[ChannelInfo]


class ChannelResult(Result, tag="channel"):
    channel: ChannelInfo


class AgentCreated(Result, tag="agent_created"):
    name: str
    token: str
    token_path: str


class AgentsResult(Result, tag="agents"):
    agents: list[AgentInfo]


class AgentResult(Result, tag="agent"):
    agent: AgentInfo


class StatusResult(Result, tag="status"):
    version: str
    workspace: str
    pid: int
    started_at: float
    last_seq: int
    channels: int
    principals: int
    agents: list[AgentInfo] = []


class HelloResult(Result, tag="hello"):
    state: AgentStateName
    epoch: int
    paused: bool
    pending: bool
    """True when the supervisor should claim now (work is waiting, wake or no wake)."""


class ClaimResult(Result, tag="claim"):
    turn: int | None
    epoch: int
    messages: list[Message] = []


class ReportResult(Result, tag="report"):
    state: AgentStateName
    epoch: int = 0
    acked: dict[str, int] = {}
    reply: Message | None = None


ResultBody = (
    Done | PrincipalResult | MessageResult | MessagesResult | ThreadResult | AckResult
    | SubscriptionResult | RoomsResult | ChannelResult | AgentCreated | AgentsResult | AgentResult
    | StatusResult | HelloResult | ClaimResult | ReportResult
)


class Error(_Frame):
    """A refusal: a stable code, one sentence for a human, and the field at fault if any."""

    code: str
    message: str
    field: str | None = None


class Reply(_Frame):
    rid: int
    result: ResultBody | None = None
    error: Error | None = None


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


class SyncEvent(Event, tag="sync"):
    nonce: str


EventBody = MessageEvent | WakeEvent | AgentEvent | SyncEvent


# --------------------------------------------------------------------------- codecs

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode
envelope_decoder = msgspec.msgpack.Decoder(Envelope)
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
