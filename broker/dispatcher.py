"""The dispatcher: one finite state machine per agent, ``ASLEEP -> WAKING -> BUSY -> ASLEEP``.

Changed only here, each change in the request's transaction together with its cause, and one
log line per change. Wakes are published after the commit (through the outbox). Nothing here runs
on a timer: every transition is caused by a message, a claim, a report, a Hello, a pause or
resume, or the exit of a supervisor process (see broker/liveness.py).

Epochs fence: every move out of ASLEEP and every claim bumps the epoch; a claim must carry the
epoch of the wake it answers and a report the epoch of its turn, so nothing stale is applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import structlog

from chatbox.bus import wire
from chatbox.broker import escalations, messages, offsets
from chatbox.broker.channels import SYSTEM
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Conflict, Forbidden, NotFound
from chatbox.broker.liveness import Liveness
from chatbox.guardrails import AgentHistory, HopBudget, Policy, TurnFacts, Veto
from chatbox.guardrails.limits import Limits

log = structlog.get_logger("dispatcher")

ALLOWED = {("ASLEEP", "WAKING"), ("WAKING", "BUSY"), ("WAKING", "ASLEEP"), ("BUSY", "ASLEEP"),
           ("BUSY", "WAKING")}

# the outcome a turn is recorded with when a guardrail vetoes it
_VETO_OUTCOME = {"livelock": "livelock", "give_up": "gave_up"}


class Dispatcher:
    def __init__(self, limits_for: Callable[[str], Limits], liveness: Liveness | None = None):
        self.limits_for = limits_for
        self.liveness = liveness or Liveness()

    # ------------------------------------------------------------------ state
    def state(self, ctx: Ctx, agent: str) -> tuple:
        """(state, epoch, current_turn, supervisor, paused, paused_reason, failures)."""
        row = ctx.db.execute(
            "SELECT state, epoch, current_turn, supervisor, paused, paused_reason, failures "
            "FROM agent_state WHERE agent = ?", (agent,)).fetchone()
        if row is None:
            raise NotFound(f"no agent named {agent!r}", field="agent")
        return row

    def transition(self, ctx: Ctx, agent: str, to: str, cause: str, *, epoch: int | None = None,
                   turn: int | None = None, publish_wake: bool = False) -> int:
        """The one writer of agent_state.state; returns the (possibly new) epoch."""
        frm, old_epoch, *_ = self.state(ctx, agent)
        if (frm, to) not in ALLOWED:
            raise Conflict(f"{agent}: no transition {frm} -> {to} ({cause})")
        new_epoch = old_epoch if epoch is None else epoch
        ctx.db.execute(
            "UPDATE agent_state SET state = ?, epoch = ?, current_turn = ?, updated_at = ? "
            "WHERE agent = ?", (to, new_epoch, turn, ctx.now, agent))
        ctx.db.execute("INSERT INTO transitions(agent, from_state, to_state, epoch, cause, at) "
                       "VALUES (?,?,?,?,?,?)", (agent, frm, to, new_epoch, cause, ctx.now))
        log.info("transition", agent=agent, frm=frm, to=to, epoch=new_epoch, cause=cause)
        ctx.publish(wire.agent_topic(agent), wire.AgentEvent(agent=agent, state=to, epoch=new_epoch,
                                                             turn=turn, cause=cause))
        if publish_wake:
            ctx.publish(wire.wake_topic(agent), wire.WakeEvent(agent=agent, epoch=new_epoch))
        return new_epoch

    def _wake(self, ctx: Ctx, agent: str, epoch: int, cause: str) -> None:
        # ASLEEP -> WAKING: a message is due; the wake goes out after the commit
        self.transition(ctx, agent, "WAKING", cause, epoch=epoch + 1, publish_wake=True)

    # ------------------------------------------------------------------ messages
    def on_message(self, ctx: Ctx, msg: wire.Message) -> None:
        """Wake every sleeping agent that ``msg`` is due for; the rest find it in the log.

        An escalation or a pending tier-2 post wakes nobody (a person answers it). A message
        whose hop has reached an agent's hop budget does not wake it; its chain is escalated
        once. A held agent (its own tier-2 post pending) is woken only by the decision.
        """
        if msg.kind == "escalation" or msg.status == "pending":
            return
        parent_author = None
        if msg.in_reply_to is not None:
            parent_author = ctx.db.execute("SELECT author FROM messages WHERE seq = ?",
                                           (msg.in_reply_to,)).get
        over_budget = []
        for agent, wake, state, epoch, paused in ctx.db.execute(
                "SELECT s.principal, s.wake, a.state, a.epoch, a.paused FROM subscriptions s "
                "JOIN agent_state a ON a.agent = s.principal "
                "JOIN principals p ON p.name = s.principal AND p.revoked_at IS NULL "
                "WHERE s.channel = ? AND s.principal != ? AND s.wake != 'none'",
                (msg.channel, msg.author)).fetchall():
            if wake == "mentions" and agent not in msg.mentions and parent_author != agent:
                continue
            if not HopBudget(self.limits_for(agent)).wakes(msg.hop):  # whatever it is doing
                over_budget.append(agent)
                continue
            if paused or state != "ASLEEP":
                continue
            if escalations.held(ctx, agent) and not self._decides_for(msg, parent_author, agent):
                continue
            self._wake(ctx, agent, epoch, f"message #{msg.seq} in {msg.channel}")
        if over_budget and not escalations.hop_budget_escalated(ctx, msg.chain):
            escalations.post_escalation(
                ctx, author=SYSTEM, agent=", ".join(over_budget), chain=msg.chain,
                guardrail="hop_budget",
                reason=f"chain {msg.chain} reached hop {msg.hop}: it wakes no agent any more",
                evidence=[f"#{msg.seq} by {msg.author} in {msg.channel}: "
                          f"{msg.body[:200]}"], about=msg.seq)
        if msg.kind == "decision" and parent_author and parent_author not in (msg.author,):
            self.wake_direct(ctx, parent_author, msg)

    @staticmethod
    def _decides_for(msg: wire.Message, parent_author: str | None, agent: str) -> bool:
        return msg.kind == "decision" and parent_author == agent

    def wake_direct(self, ctx: Ctx, agent: str, msg: wire.Message) -> None:
        """A decision wakes the author of the decided post, wherever it is subscribed."""
        row = ctx.db.execute("SELECT state, epoch, paused FROM agent_state WHERE agent = ?",
                             (agent,)).fetchone()
        if row is not None and row[0] == "ASLEEP" and not row[2]:
            self._wake(ctx, agent, row[1], f"decision #{msg.seq} on its post #{msg.in_reply_to}")

    def due(self, ctx: Ctx, agent: str, limit: int) -> list[wire.Message]:
        """What a turn of ``agent`` would handle now: its unacked due messages, oldest first.

        A held agent (its tier-2 post pending) gets only what is addressed to it alone: the
        decision.
        """
        if escalations.held(ctx, agent):
            return offsets.direct(ctx, agent, limit)
        return offsets.unacked(ctx, agent, limit, due_only=True,
                               max_hops=self.limits_for(agent).max_hops)

    def has_due(self, ctx: Ctx, agent: str) -> bool:
        return bool(self.due(ctx, agent, 1))

    # ------------------------------------------------------------------ guardrails
    def history(self, ctx: Ctx, agent: str, before: int | None = None) -> AgentHistory:
        """What the guardrails remember of ``agent``: its turns since it was last resumed."""
        _, _, _, _, _, _, failures = self.state(ctx, agent)
        resumed = ctx.db.execute("SELECT resumed_at FROM agent_state WHERE agent = ?",
                                 (agent,)).get
        rows = ctx.db.execute(
            "SELECT output, started_at, exit_code FROM turns WHERE agent = ? AND id < ? AND "
            "outcome IS NOT NULL AND started_at >= ? ORDER BY id DESC LIMIT 64",
            (agent, before if before is not None else 2**62, resumed)).fetchall()[::-1]
        return AgentHistory(agent=agent, recent_outputs=[r[0] or "" for r in rows],
                            turn_starts=[r[1] for r in rows], consecutive_failures=failures,
                            recent_exit_codes=[r[2] for r in rows])

    def trip(self, ctx: Ctx, agent: str, veto: Veto, chain: int | None) -> None:
        """A guardrail vetoed: pause the agent and ask a human, with the evidence."""
        reason = f"{veto.guardrail}: {veto.reason}"
        ctx.db.execute("UPDATE agent_state SET paused = 1, paused_reason = ?, updated_at = ? "
                       "WHERE agent = ?", (reason[:500], ctx.now, agent))
        state, epoch, turn, *_ = self.state(ctx, agent)
        ctx.db.execute("INSERT INTO transitions(agent, from_state, to_state, epoch, cause, at) "
                       "VALUES (?,?,?,?,?,?)", (agent, state, state, epoch, f"paused: {reason}",
                                                ctx.now))
        ctx.publish(wire.agent_topic(agent), wire.AgentEvent(
            agent=agent, state=state, epoch=epoch, paused=True, turn=turn, cause=reason))
        escalations.post_escalation(ctx, author=SYSTEM, agent=agent, chain=chain,
                                    guardrail=veto.guardrail, reason=veto.reason,
                                    evidence=list(veto.evidence))

    # ------------------------------------------------------------------ supervisors
    def _require_self(self, ctx: Ctx, agent: str) -> None:
        """A supervisor acts with its agent's own token, never another principal's."""
        if ctx.principal.name != agent:
            raise Forbidden(f"{ctx.principal.name} may not act as the supervisor of {agent}; "
                            "a supervisor uses its agent's token", field="agent")

    def hello(self, ctx: Ctx, req: wire.Hello) -> wire.HelloResult:
        self._require_self(ctx, req.agent)
        state, epoch, turn, sup, paused, _, _ = self.state(ctx, req.agent)
        if sup and sup != req.supervisor and self.liveness.is_alive(sup):
            raise Conflict(f"agent {req.agent} already has a running supervisor ({sup}); "
                           "stop it first", field="agent")
        ctx.db.execute("UPDATE agent_state SET supervisor = ? WHERE agent = ?",
                       (req.supervisor, req.agent))
        self.liveness.watch(req.supervisor, req.pid, req.host)
        if state == "BUSY" and not (sup == req.supervisor and req.turn == turn
                                    and req.epoch == epoch):
            # BUSY -> ASLEEP: the supervisor that ran the turn is gone (a fresh Hello)
            self.lose_turn(ctx, req.agent, f"supervisor {req.supervisor} said hello without "
                                           f"turn {turn}")
        state, epoch = self.state(ctx, req.agent)[:2]
        if state == "ASLEEP" and not paused and self.has_due(ctx, req.agent):
            # ASLEEP -> WAKING: work was waiting when the supervisor came
            epoch = self.transition(ctx, req.agent, "WAKING", "pending work at hello",
                                    epoch=epoch + 1)
            state = "WAKING"
        return wire.HelloResult(state=state, epoch=epoch, paused=bool(paused),
                                pending=state == "WAKING" and not paused)

    def on_supervisor_exit(self, ctx: Ctx, sup: str) -> None:
        """A supervisor process exited: its turn, if any, is lost."""
        for agent, state in ctx.db.execute(
                "SELECT agent, state FROM agent_state WHERE supervisor = ?", (sup,)).fetchall():
            ctx.db.execute("UPDATE agent_state SET supervisor = NULL WHERE agent = ?", (agent,))
            if state == "BUSY":
                # BUSY -> ASLEEP: the supervisor died mid-turn
                self.lose_turn(ctx, agent, f"supervisor {sup} exited")

    def lose_turn(self, ctx: Ctx, agent: str, cause: str) -> None:
        _, _, turn, *_ = self.state(ctx, agent)
        batch = self._batch(ctx, turn)
        ctx.db.execute("UPDATE turns SET outcome = 'lost', ended_at = ? WHERE id = ?",
                       (ctx.now, turn))
        for seqs in batch.values():
            for seq in seqs:
                ctx.db.execute(
                    "INSERT INTO redeliveries(agent, seq, count) VALUES (?, ?, 1) "
                    "ON CONFLICT(agent, seq) DO UPDATE SET count = count + 1", (agent, seq))
        self.transition(ctx, agent, "ASLEEP", f"turn {turn} lost: {cause}")

    # ------------------------------------------------------------------ turns
    def _check_supervisor(self, agent: str, registered: str | None, claimed: str) -> None:
        if registered != claimed:
            raise Conflict(f"{claimed} is not the registered supervisor of {agent} "
                           f"({registered or 'none'}); say hello first", field="supervisor")

    def claim(self, ctx: Ctx, req: wire.Claim) -> wire.ClaimResult:
        self._require_self(ctx, req.agent)
        state, epoch, _, sup, paused, _, _ = self.state(ctx, req.agent)
        self._check_supervisor(req.agent, sup, req.supervisor)
        if state != "WAKING" or req.epoch != epoch:
            raise Conflict(f"stale claim for {req.agent}: it is {state} at epoch {epoch}, the "
                           f"claim is for epoch {req.epoch}", field="epoch")
        limits = self.limits_for(req.agent)
        batch = [] if paused else self.due(ctx, req.agent, limits.max_batch)
        if batch:
            batch = self._drop_poison(ctx, req.agent, batch, limits)
        if batch:
            try:
                Policy(limits).before_turn(req.agent, self.history(ctx, req.agent), ctx.now)
            except Veto as veto:
                self.trip(ctx, req.agent, veto, batch[-1].chain)
                batch = []
        if not batch:
            # WAKING -> ASLEEP: nothing was due after all
            self.transition(ctx, req.agent, "ASLEEP", "claim found an empty batch")
            return wire.ClaimResult(turn=None, epoch=epoch)
        counts = dict(ctx.db.execute(
            "SELECT seq, count FROM redeliveries WHERE agent = ? AND seq BETWEEN ? AND ?",
            (req.agent, batch[0].seq, batch[-1].seq)))
        for m in batch:
            m.redelivered = m.seq in counts
        by_channel: dict[str, list[int]] = {}
        for m in batch:
            by_channel.setdefault(m.channel, []).append(m.seq)
        newest = batch[-1]
        turn = ctx.db.execute(
            "INSERT INTO turns(agent, epoch, batch, chain, hop, started_at) VALUES (?,?,?,?,?,?) "
            "RETURNING id", (req.agent, epoch + 1, json.dumps(by_channel), newest.chain,
                             max(m.hop for m in batch), ctx.now)).get
        offsets.deliver(ctx, req.agent, batch)
        # WAKING -> BUSY: the supervisor claimed the wake; a turn opens
        epoch = self.transition(ctx, req.agent, "BUSY", f"turn {turn} claimed with "
                                f"{len(batch)} messages", epoch=epoch + 1, turn=turn)
        return wire.ClaimResult(turn=turn, epoch=epoch, messages=batch)

    def _drop_poison(self, ctx: Ctx, agent: str, batch: list[wire.Message],
                     limits: Limits) -> list[wire.Message]:
        """Messages redelivered more than ``max_redeliveries`` times are escalated, not retried."""
        counts = dict(ctx.db.execute(
            "SELECT seq, count FROM redeliveries WHERE agent = ? AND count > ?",
            (agent, limits.max_redeliveries)))
        poison = [m for m in batch if m.seq in counts]
        if not poison:
            return batch
        for m in poison:
            offsets.set_acked(ctx, agent, m.channel, m.seq)
            ctx.db.execute("DELETE FROM redeliveries WHERE agent = ? AND seq = ?", (agent, m.seq))
        escalations.post_escalation(
            ctx, author=SYSTEM, agent=agent, chain=poison[-1].chain, guardrail="redelivery",
            reason=f"{len(poison)} message(s) were redelivered more than "
                   f"{limits.max_redeliveries} times after lost turns; skipped, not retried",
            evidence=[f"#{m.seq} in {m.channel} ({counts[m.seq]} deliveries): {m.body[:160]}"
                      for m in poison])
        return self.due(ctx, agent, limits.max_batch)

    def _batch(self, ctx: Ctx, turn: int | None) -> dict[str, list[int]]:
        if turn is None:
            return {}
        raw = ctx.db.execute("SELECT batch FROM turns WHERE id = ?", (turn,)).get
        return json.loads(raw) if raw else {}

    def open_turn(self, ctx: Ctx, agent: str, turn: int) -> tuple[int, int]:
        """(chain, hop) of a turn still in flight for ``agent``; a post from any other is refused."""
        state, _, current, *_ = self.state(ctx, agent)
        if state != "BUSY" or current != turn:
            raise Conflict(f"turn {turn} is not in flight for {agent}: a post from a finished "
                           "or lost turn is refused", field="turn")
        return ctx.db.execute("SELECT chain, hop FROM turns WHERE id = ?", (turn,)).fetchone()

    def report(self, ctx: Ctx, req: wire.TurnReport) -> wire.ReportResult:
        self._require_self(ctx, req.agent)
        state, epoch, turn, sup, _, _, failures = self.state(ctx, req.agent)
        self._check_supervisor(req.agent, sup, req.supervisor)
        if state != "BUSY" or turn != req.turn or epoch != req.epoch:
            raise Conflict(f"stale report for turn {req.turn} of {req.agent} (epoch "
                           f"{req.epoch}); the agent is {state} at epoch {epoch}", field="epoch")
        batch = self._batch(ctx, turn)
        started_at, chain, hop = ctx.db.execute(
            "SELECT started_at, chain, hop FROM turns WHERE id = ?", (turn,)).fetchone()
        outcome, vetoed = req.outcome, False
        try:
            Policy(self.limits_for(req.agent)).after_turn(
                TurnFacts(turn_id=turn, agent=req.agent, outcome=req.outcome,
                          exit_code=req.exit_code, output=req.output, started_at=started_at,
                          ended_at=ctx.now, engine_error=req.engine_error),
                self.history(ctx, req.agent, before=turn))
        except Veto as veto:
            outcome, vetoed = _VETO_OUTCOME.get(veto.guardrail, req.outcome), True
            self.trip(ctx, req.agent, veto, chain)
        reply = None
        if req.reply is not None and messages.clip_body(req.reply).strip() and not vetoed:
            target = messages.get(ctx, max(s for seqs in batch.values() for s in seqs))
            parent = target.in_reply_to if target.in_reply_to is not None else target.seq
            reply = messages.post(ctx, wire.Post(body=messages.clip_body(req.reply),
                                                 in_reply_to=parent),
                                  chain=chain, hop=hop + 1, turn=turn)
        acked = {}
        for channel, seqs in batch.items():
            offsets.set_acked(ctx, req.agent, channel, max(seqs))
            acked[channel] = max(seqs)
            ctx.db.execute(f"DELETE FROM redeliveries WHERE agent = ? AND seq IN "
                           f"({','.join('?' * len(seqs))})", (req.agent, *seqs))
        ctx.db.execute(
            "UPDATE turns SET ended_at = ?, outcome = ?, exit_code = ?, digest = ?, excerpt = ?, "
            "output = ? WHERE id = ?", (ctx.now, outcome, req.exit_code, req.digest,
                                        req.excerpt[:2000], req.output[:65536], turn))
        failed = req.outcome in ("failed", "timeout")
        ctx.db.execute("UPDATE agent_state SET failures = ? WHERE agent = ?",
                       (failures + 1 if failed else 0, req.agent))
        if reply is not None:
            self.on_message(ctx, reply)
        if not self.state(ctx, req.agent)[4] and self.has_due(ctx, req.agent):
            # BUSY -> WAKING: more arrived during the turn; one next turn drains it all
            epoch = self.transition(ctx, req.agent, "WAKING", f"turn {turn} {req.outcome}; more "
                                    "is due", epoch=epoch + 1, publish_wake=True)
            new_state = "WAKING"
        else:
            # BUSY -> ASLEEP: turn reported, nothing more is due
            self.transition(ctx, req.agent, "ASLEEP", f"turn {turn} {req.outcome}")
            new_state = "ASLEEP"
        return wire.ReportResult(state=new_state, epoch=epoch, acked=acked, reply=reply)
