"""How bus objects look in MCP tool results: plain JSON with the seed's field names.

A message always has ``id`` (= ``seq``), ``channel``, ``author``, ``body`` (the seed's names) and
ours beside them; optional fields appear only when set. Where a seed client reads a field under
another name, the seed's name is kept beside ours with the same value: a channel's
``is_standing`` and ``description`` (``kind``, ``topic``), a thread's ``description``, ``ts``,
``msg_type`` and ``closed_resolution``. Views trim a message for a reader who
follows many channels: ``headlines`` (who and what, no body), ``digest`` (bodies cut to
``DIGEST_CHARS``), ``full``. Nothing here ever carries a token.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec

from chatbox.bus import wire

DIGEST_CHARS = 280
HEADLINE_CHARS = 120


def iso(ts: float | None) -> str | None:
    if not ts:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def headline(m: wire.Message) -> str:
    if m.title:
        return m.title
    line = m.body.strip().splitlines()[0] if m.body.strip() else ""
    return line if len(line) <= HEADLINE_CHARS else line[:HEADLINE_CHARS - 1] + "…"


def message(m: wire.Message, view: str = "full") -> dict:
    """One message as a tool result shows it, trimmed to ``view``."""
    if view == "headlines":
        out = {"id": m.seq, "seq": m.seq, "channel": m.channel, "author": m.author,
               "kind": m.kind, "title": headline(m)}
        if m.in_reply_to is not None:
            out["in_reply_to"] = m.in_reply_to
        return out
    body = m.body
    out = {"id": m.seq, "seq": m.seq, "channel": m.channel, "author": m.author, "kind": m.kind,
           "title": m.title, "body": body, "in_reply_to": m.in_reply_to, "chain": m.chain,
           "hop": m.hop, "created_at": iso(m.created_at)}
    if view == "digest" and len(body) > DIGEST_CHARS:
        out["body"] = body[:DIGEST_CHARS - 1] + "…"
        out["truncated"] = True
    if m.type:
        out["type"] = m.type
    if m.tier:
        out["tier"] = m.tier
    if m.mentions:
        out["mentions"] = list(m.mentions)
    if m.turn is not None:
        out["turn"] = m.turn
    if m.pinned:
        out["pinned"] = True
    if m.status != "open":
        out["status"] = m.status
    if m.resolution:
        out["resolution"] = m.resolution
    if m.redelivered:
        out["redelivered"] = True
    return out


def messages(msgs: list[wire.Message], view: str | dict[str, str] = "full") -> list[dict]:
    """``view`` is one view for all, or a view per channel (a subscription's)."""
    if isinstance(view, str):
        return [message(m, view) for m in msgs]
    return [message(m, view.get(m.channel, "full")) for m in msgs]


def in_thread(m: wire.Message, *, root: bool = False) -> dict:
    """A message of a thread (``get_post``), with the seed's names beside ours: ``ts`` (=
    ``created_at``) and ``msg_type`` (the post's type, else the message's kind); the thread's
    root also ``description`` (its body) and ``closed_resolution`` (its resolution once closed,
    else null)."""
    out = message(m)
    out["ts"] = out["created_at"]
    out["msg_type"] = m.type or m.kind
    if root:
        out["description"] = m.body
        out["closed_resolution"] = m.resolution if m.status == "closed" else None
    return out


def channel(c: wire.ChannelInfo) -> dict:
    out = {"name": c.name, "topic": c.topic, "kind": c.kind, "subscribed": c.subscribed,
           "unread": c.unread, "last_id": c.last_seq,
           "description": c.topic, "is_standing": c.kind == "standing"}
    if c.subscribed:
        out["view"] = c.view
        out["wake"] = c.wake
    return out


def agent(a: wire.AgentInfo) -> dict:
    out = {"name": a.name, "state": a.state, "paused": a.paused,
           "channels": [s.channel for s in a.subscriptions]}
    if a.paused_reason:
        out["paused_reason"] = a.paused_reason
    if a.engine:
        out["engine"] = a.engine
    if a.current_turn is not None:
        out["current_turn"] = a.current_turn
    if a.last_turn is not None:
        out["last_turn"] = {"id": a.last_turn.id, "outcome": a.last_turn.outcome,
                            "ended_at": iso(a.last_turn.ended_at)}
    if a.revoked:
        out["revoked"] = True
    return out


def scrub(value: object) -> object:
    """Any bus result as plain JSON, with every key that names a token removed."""
    data = msgspec.to_builtins(value) if isinstance(value, msgspec.Struct) else value
    if isinstance(data, dict):
        return {k: scrub(v) for k, v in data.items() if "token" not in k.lower()}
    if isinstance(data, list):
        return [scrub(v) for v in data]
    return data
