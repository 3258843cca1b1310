"""The dispatcher: one finite state machine per agent, ``ASLEEP -> WAKING -> BUSY -> ASLEEP``.

It decides; ``broker/fsm.py`` writes (the one writer of ``agent_state`` and ``transitions``, each
change in the request's transaction with its cause), ``broker/states.py`` holds the states and
the allowed transitions, ``broker/turns.py`` the turn rows, redelivery and poison. Wakes are
published after the commit (through the outbox). Nothing here runs on a timer: every transition
is caused by a message, a claim, a report, a Hello, a pause or resume, or the exit of a
supervisor process (see broker/liveness.py).

The guardrails are middleware (DESIGN §5): one :class:`~guardrails.Policy` per agent, rebuilt
when the agent's limits change, asked ``on_message`` before a message wakes the agent,
``before_turn`` before a claim opens a turn and ``after_turn`` when a turn is reported or lost.

Epochs fence: every move into WAKING or BUSY bumps the epoch; a claim must carry the epoch of
the wake it answers and a report the epoch of its turn, so nothing stale is applied.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from chatbox.broker import escalations, fsm, messages, offsets, turns
from chatbox.broker.channels import SYSTEM
from chatbox.broker.context import Ctx
from chatbox.broker.errors import Conflict, Forbidden
from chatbox.broker.liveness import Liveness
from chatbox.broker.states import ASLEEP, BUSY, WAKING
from chatbox.bus import wire
from chatbox.guardrails import MessageFacts, Policy, TurnFacts, Veto
from chatbox.guardrails.limits import Limits

# the outcome a turn is recorded with when a guardrail vetoes it
_VETO_OUTCOME = {"livelock": "livelock", "give_up": "gave_up"}
# the cause of a turn ended (or a wake withdrawn) because its agent was revoked
REVOKED = "revoked"


class Dispatcher:
    def __init__(self, limits_for: Callable[[str], Limits], liveness: Liveness | None = None):
        self.limits_for = limits_for
        self.liveness = liveness or Liveness()
        self._policies: dict[str, tuple[Limits, Policy]] = {}

    def policy(self, agent: str) -> Policy:
        """The guardrails of ``agent``: built once, rebuilt when its limits change."""
        limits = self.limits_for(agent)
        cached = self._policies.get(agent)
        if cached is None or cached[0] != limits:
            # keep a copy: limits changed in place must still be seen as a change
            seen = msgspec.structs.replace(limits, give_up_phrases=list(limits.give_up_phrases))
            cached = self._policies[agent] = (seen, Policy(limits))
        return cached[1]

    # ------------------------------------------------------------------ messages
    def post(self, ctx: Ctx, req: wire.Post) -> wire.Message:
        """The post path: a post outside a turn starts a chain, one inside a turn continues the
        chain of the turn's trigger one hop further; then it wakes whom it is due for."""
        policy = self.policy(ctx.principal.name)
        chain, hop = None, policy.start_hop()
        if req.turn is not None:
            chain, trigger_hop = self.open_turn(ctx, ctx.principal.name, req.turn)
            hop = policy.next_hop([trigger_hop])
        msg = messages.post(ctx, req, chain=chain, hop=hop, turn=req.turn)
        self.on_message(ctx, msg)
        return msg

    def on_message(self, ctx: Ctx, msg: wire.Message) -> None:
        """Wake every sleeping agent that ``msg`` is due for; the rest find it in the log.

        An escalation or a pending tier-2 post wakes nobody (a person answers it). A message an
        agent's policy vetoes (its hop has reached the hop budget) does not wake that agent,
        whatever it is doing; its chain is escalated once. A held agent (its own tier-2 post
        pending) is woken only by the decision.
        """
        if msg.kind == "escalation" or msg.status == "pending":
            return
        parent_author = None
        if msg.in_reply_to is not None:
            parent_author = ctx.db.execute("SELECT author FROM messages WHERE seq = ?",
                                           (msg.in_reply_to,)).get
        facts = self._facts(ctx, msg)
        vetoed: list[tuple[str, Veto]] = []
        for agent, wake, state, paused in ctx.db.execute(
                "SELECT s.principal, s.wake, a.state, a.paused FROM subscriptions s "
                "JOIN agent_state a ON a.agent = s.principal "
                "JOIN principals p ON p.name = s.principal AND p.revoked_at IS NULL "
                "WHERE s.channel = ? AND s.principal != ? AND s.wake != 'none'",
                (msg.channel, msg.author)).fetchall():
            if wake == "mentions" and agent not in msg.mentions and parent_author != agent:
                continue
            try:
                self.policy(agent).on_message(facts)
            except Veto as veto:
                vetoed.append((agent, veto))
                continue
            if paused or state != ASLEEP:
                continue
            if escalations.held(ctx, agent) and not self._decides_for(msg, parent_author, agent):
                continue
            fsm.transition(ctx, agent, WAKING, f"message #{msg.seq} in {msg.channel}")
        if vetoed and not escalations.hop_budget_escalated(ctx, msg.chain):
            veto = vetoed[0][1]
            escalations.post_escalation(
                ctx, author=SYSTEM, agent=", ".join(a for a, _ in vetoed), chain=msg.chain,
                guardrail=veto.guardrail, reason=veto.reason,
                evidence=[*veto.evidence, f"#{msg.seq} by {msg.author} in {msg.channel}: "
                                          f"{msg.body[:200]}"], about=msg.seq)
        if msg.kind == "decision" and parent_author and parent_author not in (msg.author,):
            self.wake_direct(ctx, parent_author, msg)

    @staticmethod
    def _facts(ctx: Ctx, msg: wire.Message) -> MessageFacts:
        role = ctx.principal.role if ctx.principal.name == msg.author else ctx.db.execute(
            "SELECT role FROM principals WHERE name = ?", (msg.author,)).get
        return MessageFacts(seq=msg.seq, channel=msg.channel, author=msg.author,
                            author_role=role or "agent", chain=msg.chain, hop=msg.hop,
                            tier=msg.tier)

    @staticmethod
    def _decides_for(msg: wire.Message, parent_author: str | None, agent: str) -> bool:
        return msg.kind == "decision" and parent_author == agent

    def wake_direct(self, ctx: Ctx, agent: str, msg: wire.Message) -> None:
        """A decision wakes the author of the decided post, wherever it is subscribed."""
        row = ctx.db.execute("SELECT state, paused FROM agent_state WHERE agent = ?",
                             (agent,)).fetchone()
        if row is not None and row[0] == ASLEEP and not row[1]:
            fsm.transition(ctx, agent, WAKING,
                           f"decision #{msg.seq} on its post #{msg.in_reply_to}")

    def due(self, ctx: Ctx, agent: str, limit: int) -> list[wire.Message]:
        """What a turn of ``agent`` would handle now: its unacked due messages, oldest first.

        A held agent (its tier-2 post pending) gets only what is addressed to it alone: the
        decision. The hop filter is the hop budget's ``wakes`` in SQL.
        """
        if escalations.held(ctx, agent):
            return offsets.direct(ctx, agent, limit)
        return offsets.unacked(ctx, agent, limit, due_only=True,
                               max_hops=self.policy(agent).limits.max_hops)

    def has_due(self, ctx: Ctx, agent: str) -> bool:
        return bool(self.due(ctx, agent, 1))

    # ------------------------------------------------------------------ pause and resume
    def pause(self, ctx: Ctx, agent: str, reason: str | None) -> None:
        """A human pauses ``agent``: nothing is dispatched to it until it is resumed."""
        fsm.set_paused(ctx, agent, True, reason or f"paused by {ctx.principal.name}",
                       f"paused by {ctx.principal.name}", reset_failures=True)

    def resume(self, ctx: Ctx, agent: str) -> None:
        """A human resumes ``agent``: whatever it has not handled is due, and wakes it."""
        row = fsm.set_paused(ctx, agent, False, None, f"resumed by {ctx.principal.name}",
                             reset_failures=True)
        if row.state == ASLEEP and self.has_due(ctx, agent):
            fsm.transition(ctx, agent, WAKING, f"resumed by {ctx.principal.name}")

    def trip(self, ctx: Ctx, agent: str, veto: Veto, chain: int | None) -> None:
        """A guardrail vetoed: pause the agent and ask a human, with the evidence."""
        reason = f"{veto.guardrail}: {veto.reason}"
        fsm.set_paused(ctx, agent, True, reason, f"paused: {reason}", reset_failures=False)
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
        row = fsm.load(ctx, req.agent)
        if row.supervisor and row.supervisor != req.supervisor and self._runs(ctx, req.agent):
            raise Conflict(f"agent {req.agent} already has a running supervisor "
                           f"({row.supervisor}); stop it first", field="agent")
        started = self.liveness.identify(req.pid, req.host)
        fsm.set_supervisor(ctx, req.agent, req.supervisor, host=req.host, pid=req.pid,
                           started=started)
        self.liveness.watch(req.supervisor, req.pid, req.host, started)
        if row.state == BUSY and not (row.supervisor == req.supervisor
                                      and req.turn == row.current_turn
                                      and req.epoch == row.epoch):
            # the supervisor that ran the turn is gone (a fresh Hello)
            self.lose_turn(ctx, req.agent, f"supervisor {req.supervisor} said hello without "
                                           f"turn {row.current_turn}")
        row = fsm.load(ctx, req.agent)
        if row.state == ASLEEP and not row.paused and self.has_due(ctx, req.agent):
            row = fsm.transition(ctx, req.agent, WAKING, "pending work at hello")
        return wire.HelloResult(state=row.state, epoch=row.epoch, paused=row.paused,
                                pending=row.state == WAKING and not row.paused)

    def _runs(self, ctx: Ctx, agent: str) -> bool:
        """Does the registered supervisor of ``agent`` still run? Watched: yes. Not watched (the
        broker restarted since its Hello): the process kept for it is looked at — on this host,
        the same pid with the same start time — and watched from now on if it runs. A
        supervisor on another host cannot be looked at: its successor's Hello is accepted."""
        kept = fsm.supervisors(ctx, agent)
        if not kept:
            return False
        _, sup, host, pid, started = kept[0]
        return bool(self.liveness.is_alive(sup) or self.liveness.watch(sup, pid, host, started))

    def recover(self, ctx: Ctx) -> None:
        """At broker start: watch again every supervisor kept that still runs on this host; one
        that exited while the broker was down is gone, and its turn lost."""
        for _, sup, host, pid, started in fsm.supervisors(ctx):
            if self.liveness.watch(sup, pid, host, started) is False:
                self.on_supervisor_exit(ctx, sup)

    def on_supervisor_exit(self, ctx: Ctx, sup: str) -> None:
        """A supervisor process exited: its turn, if any, is lost."""
        for agent, state in ctx.db.execute(
                "SELECT agent, state FROM agent_state WHERE supervisor = ?", (sup,)).fetchall():
            fsm.set_supervisor(ctx, agent, None)
            if state == BUSY:
                self.lose_turn(ctx, agent, f"supervisor {sup} exited")

    def on_revoked(self, ctx: Ctx, agent: str) -> None:
        """A revoked agent runs nothing more: its open turn ends lost (cause "revoked"), a wake
        it has not claimed is withdrawn, its supervisor forgotten (whose next request is
        refused ``unauthorized``, and it exits)."""
        row = ctx.db.execute("SELECT state FROM agent_state WHERE agent = ?", (agent,)).get
        if row == BUSY:
            self.lose_turn(ctx, agent, REVOKED)
        elif row == WAKING:
            fsm.transition(ctx, agent, ASLEEP, REVOKED)
        if row is not None:
            fsm.set_supervisor(ctx, agent, None)

    def lose_turn(self, ctx: Ctx, agent: str, cause: str) -> None:
        """The turn in flight died with its supervisor: it ends ``lost``, a failed turn."""
        turn = turns.get(ctx, fsm.load(ctx, agent).current_turn)
        if turn is not None:
            self._end_turn(ctx, turn, turns.facts(turn, ctx.now, "lost", cause=cause))
        fsm.transition(ctx, agent, ASLEEP, f"turn {turn and turn.id} lost: {cause}")

    # ------------------------------------------------------------------ turns
    def _check_supervisor(self, agent: str, registered: str | None, claimed: str) -> None:
        if registered != claimed:
            raise Conflict(f"{claimed} is not the registered supervisor of {agent} "
                           f"({registered or 'none'}); say hello first", field="supervisor")

    def claim(self, ctx: Ctx, req: wire.Claim) -> wire.ClaimResult:
        self._require_self(ctx, req.agent)
        row = fsm.load(ctx, req.agent)
        self._check_supervisor(req.agent, row.supervisor, req.supervisor)
        if row.state != WAKING or req.epoch != row.epoch:
            raise Conflict(f"stale claim for {req.agent}: it is {row.state} at epoch {row.epoch}, "
                           f"the claim is for epoch {req.epoch}", field="epoch")
        policy = self.policy(req.agent)
        limits = policy.limits
        batch = [] if row.paused else self.due(ctx, req.agent, limits.max_batch)
        if batch and turns.drop_poison(ctx, req.agent, batch, limits.max_redeliveries):
            batch = self.due(ctx, req.agent, limits.max_batch)
        if batch:
            try:
                policy.before_turn(req.agent, turns.history_before_turn(ctx, row, limits),
                                   ctx.now)
            except Veto as veto:
                self.trip(ctx, req.agent, veto, batch[-1].chain)
                batch = []
        if not batch:
            fsm.transition(ctx, req.agent, ASLEEP, "claim found an empty batch")
            return wire.ClaimResult(turn=None, epoch=row.epoch)
        turn = turns.start(ctx, req.agent, row.epoch + 1, batch)
        row = fsm.transition(ctx, req.agent, BUSY, f"turn {turn.id} claimed with "
                             f"{len(batch)} messages", turn=turn.id)
        return wire.ClaimResult(turn=turn.id, epoch=row.epoch, messages=batch)

    def open_turn(self, ctx: Ctx, agent: str, turn: int) -> tuple[int, int]:
        """(chain, hop) of the trigger of a turn still in flight for ``agent``; a post from any
        other turn is refused."""
        row = fsm.load(ctx, agent)
        found = turns.get(ctx, turn) if row.state == BUSY and row.current_turn == turn else None
        if found is None:
            raise Conflict(f"turn {turn} is not in flight for {agent}: a post from a finished "
                           "or lost turn is refused", field="turn")
        return found.chain, found.hop

    def report(self, ctx: Ctx, req: wire.TurnReport) -> wire.ReportResult:
        self._require_self(ctx, req.agent)
        row = fsm.load(ctx, req.agent)
        self._check_supervisor(req.agent, row.supervisor, req.supervisor)
        if row.state != BUSY or row.current_turn != req.turn or row.epoch != req.epoch:
            raise Conflict(f"stale report for turn {req.turn} of {req.agent} (epoch "
                           f"{req.epoch}); the agent is {row.state} at epoch {row.epoch}",
                           field="epoch")
        turn = turns.get(ctx, row.current_turn)
        outcome, cause = req.outcome, req.cause
        if req.needs_connection and outcome == "ok" and not turns.connected(ctx, turn):
            outcome, cause = "failed", turns.NOT_CONNECTED  # a silent empty turn is a failure
        vetoed, acked = self._end_turn(
            ctx, turn, turns.facts(turn, ctx.now, outcome, exit_code=req.exit_code,
                                   output=req.output, engine_error=req.engine_error, cause=cause,
                                   input_tokens=req.input_tokens, output_tokens=req.output_tokens,
                                   cost_usd=req.cost_usd),
            digest=req.digest, excerpt=req.excerpt)
        reply = None
        if req.reply is not None and messages.clip_body(req.reply).strip() and not vetoed:
            target = messages.get(ctx, turn.seqs[-1])
            parent = target.in_reply_to if target.in_reply_to is not None else target.seq
            reply = messages.post(ctx, wire.Post(body=messages.clip_body(req.reply),
                                                 in_reply_to=parent), chain=turn.chain,
                                  hop=self.policy(req.agent).next_hop([turn.hop]), turn=turn.id)
            self.on_message(ctx, reply)
        if not fsm.load(ctx, req.agent).paused and self.has_due(ctx, req.agent):
            # more arrived during the turn (or its batch is due again): one next turn for all
            row = fsm.transition(ctx, req.agent, WAKING, f"turn {turn.id} {outcome}; more "
                                 "is due")
        else:
            row = fsm.transition(ctx, req.agent, ASLEEP, f"turn {turn.id} {outcome}")
        return wire.ReportResult(state=row.state, epoch=row.epoch, acked=acked, reply=reply)

    def _end_turn(self, ctx: Ctx, turn: turns.Turn, facts: TurnFacts,
                  **record: str | None) -> tuple[bool, dict[str, int]]:
        """The one way a turn ends, reported or lost: the guardrails judge it (a lost turn is
        a failed one), the batch is acked or left due, the turn is recorded and the failure
        run counted. Returns whether a guardrail vetoed, and what was acked."""
        policy = self.policy(turn.agent)
        row = fsm.load(ctx, turn.agent)
        outcome, vetoed = facts.outcome, False
        try:
            policy.after_turn(facts, turns.history_after_turn(ctx, row, policy.limits, turn.id))
        except Veto as veto:
            outcome, vetoed = _VETO_OUTCOME.get(veto.guardrail, facts.outcome), True
            self.trip(ctx, turn.agent, veto, turn.chain)
        acked = turns.settle(ctx, turn, outcome, facts.engine_error)
        turns.finish(ctx, turn, facts, outcome,
                     output=facts.output if facts.outcome != "lost" else None, **record)
        fsm.count_failure(ctx, turn.agent, policy.is_failure(facts.outcome))
        return vetoed, acked
