"""The types of the HTTP API: every request body, query and response of ``/v1`` as a Struct.

The routes decode their input with these types and encode their output from them, and the
OpenAPI document (``openapi.py``) is generated from the same types, so the document cannot drift
from the routes. Bounds come from the wire (``chatbox.bus.bounds``): declared once.

Responses show every field, defaults included (``omit_defaults`` off), so a reader never meets a
missing ``unread`` or ``pinned``. A message is the ``chatbox read --json`` object plus ``type``,
``resolution`` and ``mentions``; an agent is the ``chatbox agent list --json`` object plus
``paused_reason``, ``current_turn`` and ``revoked``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from chatbox.bus import bounds, wire

MAX_WAIT_MS = 60_000
DEFAULT_WAIT_MS = 30_000
MAX_TOKEN = 256
MAX_QUERY = 400

Seq = Annotated[int, Meta(ge=0, le=wire.MAX_ID, description="a message's seq")]
Text = Annotated[str, Meta(max_length=wire.MAX_RESOLUTION, pattern=bounds.TEXT_PATTERN,
                           description=bounds.TEXT_RULE)]
PostBodyText = Annotated[str, Meta(min_length=1, max_length=wire.MAX_BODY)]


class _In(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class _Query(msgspec.Struct, kw_only=True):
    """Query parameters: unknown ones are ignored (a cache-buster must not fail a read)."""


class _Out(msgspec.Struct, kw_only=True):
    pass


# --------------------------------------------------------------------------- objects

class Message(_Out):
    seq: int
    channel: str
    author: str
    kind: wire.Kind
    title: str | None
    body: str
    in_reply_to: int | None
    chain: int
    hop: int
    tier: int
    status: str
    pinned: bool
    turn: int | None
    created_at: float
    type: str | None
    resolution: str | None
    mentions: list[str]


class Channel(_Out):
    name: str
    kind: wire.ChannelKind
    topic: str
    last_seq: int
    unread: int
    subscribed: bool
    view: wire.View | None
    wake: wire.WakeMode | None
    created_by: str | None
    last_activity: float | None


class Subscription(_Out):
    channel: str
    view: wire.View
    wake: wire.WakeMode
    last_read: int


class Turn(_Out):
    id: int
    outcome: str | None
    cause: str | None
    exit_code: int | None
    started_at: float
    ended_at: float | None
    batch: list[int]
    excerpt: str
    connected: bool
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


class Agent(_Out):
    name: str
    state: wire.AgentStateName
    paused: bool
    paused_reason: str | None
    engine: str | None
    subscriptions: list[Subscription]
    offsets: dict[str, int]
    current_turn: int | None
    last_turn: Turn | None
    revoked: bool


class Escalation(_Out):
    """What waits for a human: an escalation in #alerts, or another pending tier-2 post.
    ``post`` is the seq to approve or deny; ``about`` the message an escalation names."""

    message: Message
    agent: str | None
    chain: int | None
    reason: str
    evidence: list[str]
    post: int
    about: int | None


class Problem(_Out):
    """An RFC 9457 problem: ``code`` is the wire's error code, ``field`` the input at fault."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    field: str | None


# --------------------------------------------------------------------------- bodies

class SessionIn(_In):
    token: Annotated[str, Meta(min_length=1, max_length=MAX_TOKEN)]


class PostIn(_In):
    body: PostBodyText
    title: wire.Title | None = None
    type: wire.PostType | None = None
    tier: wire.Tier = 0
    reply_to: Seq | None = None
    turn: Seq | None = None


class ReplyIn(_In):
    body: PostBodyText
    turn: Seq | None = None


class ApproveIn(_In):
    comment: Text | None = None


class DenyIn(_In):
    reason: Annotated[Text, Meta(min_length=1)]


class AckIn(_In):
    channel: wire.ChannelName
    up_to: Seq


class PauseIn(_In):
    reason: Text | None = None


class Empty(_In):
    pass


# --------------------------------------------------------------------------- queries

class MessagesQuery(_Query):
    since: Seq = 0
    limit: wire.Limit = 100


class SearchQuery(_Query):
    q: Annotated[str, Meta(min_length=1, max_length=MAX_QUERY)]
    channel: wire.ChannelName | None = None
    limit: wire.SearchLimit = 20


class InboxQuery(_Query):
    limit: wire.Limit = 100


class WaitQuery(_Query):
    timeout_ms: Annotated[int, Meta(ge=0, le=MAX_WAIT_MS)] = DEFAULT_WAIT_MS
    limit: wire.Limit = 100


class NoQuery(_Query):
    pass


# --------------------------------------------------------------------------- results

class Me(_Out):
    name: str
    role: str


class Rooms(_Out):
    channels: list[Channel]


class Messages(_Out):
    messages: list[Message]
    last_seq: int
    more: bool


class OneMessage(_Out):
    message: Message


class Thread(_Out):
    post: Message
    replies: list[Message]


class Found(_Out):
    messages: list[Message]


class Inbox(_Out):
    messages: list[Message]
    more: bool


class Waited(_Out):
    messages: list[Message]
    more: bool
    timed_out: bool


class Acked(_Out):
    channel: str
    last_read: int


class Escalations(_Out):
    escalations: list[Escalation]


class Agents(_Out):
    agents: list[Agent]


class OneAgent(_Out):
    agent: Agent


class Health(_Out):
    status: str


class LoggedOut(_Out):
    status: str


# --------------------------------------------------------------------------- from the wire

def message(m: wire.Message) -> Message:
    return Message(seq=m.seq, channel=m.channel, author=m.author, kind=m.kind, title=m.title,
                   body=m.body, in_reply_to=m.in_reply_to, chain=m.chain, hop=m.hop, tier=m.tier,
                   status=m.status, pinned=m.pinned, turn=m.turn, created_at=m.created_at,
                   type=m.type, resolution=m.resolution, mentions=list(m.mentions))


def messages(ms: list[wire.Message]) -> list[Message]:
    return [message(m) for m in ms]


def channel(c: wire.ChannelInfo) -> Channel:
    return Channel(name=c.name, kind=c.kind, topic=c.topic, last_seq=c.last_seq,
                   unread=c.unread, subscribed=c.subscribed, view=c.view, wake=c.wake,
                   created_by=c.created_by, last_activity=c.last_activity)


def turn(t: wire.TurnInfo | None) -> Turn | None:
    if t is None:
        return None
    return Turn(id=t.id, outcome=t.outcome, cause=t.cause, exit_code=t.exit_code,
                started_at=t.started_at, ended_at=t.ended_at, batch=list(t.batch),
                excerpt=t.excerpt, connected=t.connected, input_tokens=t.input_tokens,
                output_tokens=t.output_tokens, cost_usd=t.cost_usd)


def agent(a: wire.AgentInfo) -> Agent:
    subs = [Subscription(channel=s.channel, view=s.view, wake=s.wake, last_read=s.last_read)
            for s in a.subscriptions]
    return Agent(name=a.name, state=a.state, paused=a.paused, paused_reason=a.paused_reason,
                 engine=a.engine, subscriptions=subs, offsets=dict(a.offsets),
                 current_turn=a.current_turn, last_turn=turn(a.last_turn), revoked=a.revoked)
