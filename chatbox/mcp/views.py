"""How bus objects look in MCP tool results: plain JSON with the seed's field names.

A message always has ``id`` (= ``seq``), ``channel``, ``author``, ``body`` and ``ts`` (the
seed's names; ``ts`` in seconds since the epoch, as the seed stored it) and ours beside them;
optional fields appear only when set. Where a seed client reads a field under another name,
the seed's name is kept beside ours with the seed's value: a channel's ``is_standing``,
``description`` (``kind``, ``topic``) and ``last_activity``; a thread's ``description``,
``msg_type``, ``closed_resolution`` and ``resolved``. Views trim a message for a reader who
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
           "hop": m.hop, "created_at": iso(m.created_at), "ts": m.created_at}
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
    """A message of a thread (``get_post``) with the seed's columns beside ours, as the seed's
    values: ``ts`` (seconds since the epoch, as ``created_at`` is on the bus), ``msg_type``
    (a post's type; null for a chat or a reply, as in the seed), ``description`` (a post's
    body; null otherwise), ``closed_resolution`` (the resolution once closed, else null) and
    ``resolved``."""
    out = message(m)
    out["msg_type"] = m.type
    out["description"] = m.body if root and m.kind == "post" else None
    out["closed_resolution"] = m.resolution if m.status == "closed" else None
    out["resolved"] = m.status == "resolved"
    return out


def channel(c: wire.ChannelInfo) -> dict:
    out = {"name": c.name, "topic": c.topic, "kind": c.kind, "subscribed": c.subscribed,
           "unread": c.unread, "last_id": c.last_seq,
           "description": c.topic, "is_standing": c.kind == "standing",
           "last_activity": c.last_activity}
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
