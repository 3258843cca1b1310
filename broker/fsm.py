"""The one writer of ``agent_state`` and ``transitions``: every change of an agent's state machine.

After supervisord's ``Subprocess.change_state`` and ``_assertInState``: :func:`transition` and
:func:`set_paused` both go through :func:`_write`, which checks the change against the table of
``broker/states.py``, writes the row, one ``transitions`` row and one audit entry in the
request's transaction, and puts the ``AgentEvent`` in the outbox: published after the commit,
and logged then (:func:`log_committed`), one line each. Entering WAKING always publishes
``wake/A`` too: there is one way into WAKING, whatever made a message due.
"""

from __future__ import annotations

import msgspec
import structlog

from chatbox.broker import audit, states
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Conflict, NotFound
from chatbox.broker.states import AgentState
from chatbox.bus import wire

log = structlog.get_logger("dispatcher")


def load(ctx: Ctx, agent: str) -> AgentState:
    """The state row of ``agent``; NotFound if it is no agent."""
    row = ctx.db.execute(f"SELECT {states.COLUMNS} FROM agent_state WHERE agent = ?",
                         (agent,)).fetchone()
    if row is None:
        raise NotFound(f"no agent named {agent!r}", field="agent")
    return AgentState.from_row(row)


def transition(ctx: Ctx, agent: str, to: str, cause: str, *, turn: int | None = None) -> AgentState:
    """Move ``agent`` to ``to`` because of ``cause``; ``turn`` is the turn a move to BUSY opens."""
    before = load(ctx, agent)
    epoch = before.epoch + 1 if to in states.BUMPS_EPOCH else before.epoch
    after = msgspec.structs.replace(before, state=to, epoch=epoch,
                                    current_turn=turn if to == states.BUSY else None)
    return _write(ctx, before, after, cause, pausing=False)


def set_paused(ctx: Ctx, agent: str, paused: bool, reason: str | None, cause: str, *,
               reset_failures: bool) -> AgentState:
    """Pause or resume ``agent`` where it stands (X -> X). A resume starts the guardrails'
    memory afresh (``resumed_at``)."""
    before = load(ctx, agent)
    after = msgspec.structs.replace(
        before, paused=paused, paused_reason=reason[:500] if paused and reason else None,
        failures=0 if reset_failures else before.failures,
        resumed_at=before.resumed_at if paused else ctx.now)
    return _write(ctx, before, after, cause, pausing=True)


def _write(ctx: Ctx, before: AgentState, after: AgentState, cause: str, *,
           pausing: bool) -> AgentState:
    if not states.allowed(before.state, after.state, pausing=pausing):
        raise Conflict(f"{before.agent}: no transition {before.state} -> {after.state} ({cause})")
    ctx.db.execute(
        "UPDATE agent_state SET state = ?, epoch = ?, current_turn = ?, paused = ?, "
        "paused_reason = ?, failures = ?, resumed_at = ?, updated_at = ? WHERE agent = ?",
        (after.state, after.epoch, after.current_turn, int(after.paused), after.paused_reason,
         after.failures, after.resumed_at, ctx.now, after.agent))
    ctx.db.execute("INSERT INTO transitions(agent, from_state, to_state, epoch, cause, at) "
                   "VALUES (?,?,?,?,?,?)",
                   (after.agent, before.state, after.state, after.epoch, cause, ctx.now))
    audit.transition(ctx, before.state, after, cause)
    ctx.publish(wire.agent_topic(after.agent), wire.AgentEvent(
        agent=after.agent, state=after.state, epoch=after.epoch, paused=after.paused,
        turn=after.current_turn, cause=cause, previous=before.state))
    if after.state == states.WAKING and before.state != states.WAKING:
        ctx.publish(wire.wake_topic(after.agent), wire.WakeEvent(agent=after.agent,
                                                                 epoch=after.epoch))
    return after


def log_committed(outbox: list[tuple[bytes, wire.Event]]) -> None:
    """The line of each transition of ``outbox``, once its transaction has committed: the loop
    writes them after it has sent the replies, so no request waits on them, and a transition
    whose request was rolled back is never logged."""
    for _, event in outbox:
        if isinstance(event, wire.AgentEvent):
            log.info("transition", agent=event.agent, frm=event.previous, to=event.state,
                     epoch=event.epoch, paused=event.paused, cause=event.cause)


def set_supervisor(ctx: Ctx, agent: str, supervisor: str | None, *, host: str | None = None,
                   pid: int | None = None, started: int | None = None) -> None:
    """Register (or forget) the supervisor of ``agent`` and the process it is (host, pid, start
    time), kept across broker restarts; not a transition."""
    ctx.db.execute("UPDATE agent_state SET supervisor = ?, supervisor_host = ?, "
                   "supervisor_pid = ?, supervisor_started = ? WHERE agent = ?",
                   (supervisor, host, pid, started, agent))


def supervisors(ctx: Ctx, agent: str | None = None) -> list[tuple[str, str, str | None,
                                                                   int | None, int | None]]:
    """(agent, supervisor, host, pid, start time) of every registered supervisor (of ``agent``)."""
    sql = ("SELECT agent, supervisor, supervisor_host, supervisor_pid, supervisor_started "
           "FROM agent_state WHERE supervisor IS NOT NULL")
    if agent is None:
        return ctx.db.execute(sql).fetchall()
    return ctx.db.execute(sql + " AND agent = ?", (agent,)).fetchall()


def count_failure(ctx: Ctx, agent: str, failed: bool) -> None:
    """A failed turn lengthens the run of consecutive failures; any other turn ends it."""
    ctx.db.execute("UPDATE agent_state SET failures = CASE WHEN ? THEN failures + 1 ELSE 0 END "
                   "WHERE agent = ?", (int(failed), agent))
