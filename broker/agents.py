"""Agents as the operator sees them: add, list, show, pause, resume, revoke."""

from __future__ import annotations

import msgspec

from chatbox.bus import wire
from chatbox.broker import channels, offsets, principals, turns
from chatbox.broker.context import Ctx
from chatbox.broker.dispatcher import Dispatcher
from chatbox.broker.errors import Forbidden, NotFound


def require_admin(ctx: Ctx, what: str) -> None:
    if not ctx.principal.is_human:
        raise Forbidden(f"only a human or admin may {what}")


def add(ctx: Ctx, req: wire.AddAgent, token: str) -> None:
    require_admin(ctx, "add an agent")
    principals.create(ctx.db, req.name, "agent", token, engine=req.engine, now=ctx.now)
    for ch in req.subscribe:
        channels.get(ctx, ch, "subscribe")
        channels.subscribe(ctx, ch, req.view, req.wake, req.name)


def info(ctx: Ctx, name: str) -> wire.AgentInfo:
    row = ctx.db.execute(
        "SELECT p.name, p.engine, p.revoked_at, a.state, a.epoch, a.current_turn, a.supervisor, "
        "a.paused, a.paused_reason FROM principals p JOIN agent_state a ON a.agent = p.name "
        "WHERE p.name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no agent named {name!r}", field="name")
    _, engine, revoked, state, epoch, current, sup, paused, reason = row
    last = ctx.db.execute(
        "SELECT id, agent, epoch, outcome, exit_code, started_at, ended_at, excerpt, batch, "
        "cause, connected_at, input_tokens, output_tokens, cost_usd "
        "FROM turns WHERE agent = ? ORDER BY id DESC LIMIT 1", (name,)).fetchone()
    last_turn = None
    if last is not None:
        last_turn = wire.TurnInfo(id=last[0], agent=last[1], epoch=last[2], outcome=last[3],
                                  exit_code=last[4], started_at=last[5], ended_at=last[6],
                                  excerpt=last[7] or "", batch=turns.batch_seqs(last[8]),
                                  cause=last[9],
                                  connected=last[10] is not None, input_tokens=last[11],
                                  output_tokens=last[12], cost_usd=last[13])
    return wire.AgentInfo(name=name, state=state, epoch=epoch, paused=bool(paused),
                          paused_reason=reason, engine=engine,
                          subscriptions=channels.subscriptions_of(ctx, name),
                          offsets=offsets.of(ctx, name), current_turn=current, last_turn=last_turn,
                          supervisor=sup, revoked=revoked is not None)


def visible(ctx: Ctx, info: wire.AgentInfo) -> wire.AgentInfo:
    """What the asker may see of an agent: an agent sees another's state and the channels it may
    see itself, not how far the other has read, where its supervisor runs, nor what its last
    turn handled and said (its batch, whose seqs may be in channels the asker is not in, its
    output excerpt and cause)."""
    if ctx.principal.is_human or ctx.principal.name == info.name:
        return info
    last = info.last_turn and msgspec.structs.replace(info.last_turn, excerpt="", cause=None,
                                                      batch=[])
    shown = [msgspec.structs.replace(s, last_read=0) for s in info.subscriptions
             if channels.subscription(ctx, ctx.principal.name, s.channel) is not None
             or channels.get(ctx, s.channel)[2] not in channels.MEMBERS_ONLY]
    return msgspec.structs.replace(info, offsets={}, supervisor=None, subscriptions=shown,
                                   last_turn=last)


def list_all(ctx: Ctx) -> list[wire.AgentInfo]:
    return [info(ctx, n) for (n,) in ctx.db.execute(
        "SELECT name FROM principals WHERE role = 'agent' ORDER BY name").fetchall()]


def set_paused(ctx: Ctx, dispatcher: Dispatcher, name: str, paused: bool,
               reason: str | None) -> wire.AgentInfo:
    """A human pauses or resumes an agent; a resumed agent with work due is woken."""
    require_admin(ctx, "pause or resume an agent")
    if paused:
        dispatcher.pause(ctx, name, reason)
    else:
        dispatcher.resume(ctx, name)
    return info(ctx, name)
