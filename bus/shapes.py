"""The data shapes every interface shows: messages, channels, subscriptions, turns, agents.

Part of the wire (``chatbox.bus.wire`` re-exports every name here): plain msgspec Structs, strict
about unknown fields, with defaults for every field added since the first version. Stored data is
never refused on its way out, so these carry no bounds of their own (see ``bounds``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

Kind = Literal["chat", "post", "reply", "decision", "escalation", "system"]
View = Literal["headlines", "digest", "full"]
WakeMode = Literal["all", "mentions", "none"]
ChannelKind = Literal["standing", "adhoc", "private", "canary"]
AgentStateName = Literal["ASLEEP", "WAKING", "BUSY"]
Outcome = Literal["ok", "failed", "timeout", "livelock", "gave_up", "lost", "vetoed"]
FlagAction = Literal["pin", "unpin", "close", "resolve", "unresolve"]


class _Frame(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


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
    cause: str | None = None
    connected: bool = False
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


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
