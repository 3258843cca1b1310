"""Turns: the row of each turn and what becomes of its batch (DESIGN §4.2, §4.3, §4.5).

A claim starts a turn on a batch (:func:`start`): the batch is recorded channel by channel and
marked delivered, and every message of it that an earlier turn left unacked is marked
``redelivered``. When the turn ends, :func:`settle` acks exactly the batch (never past it) if
the turn handled it (:func:`acks`: ``ok`` or a deliberate give-up); after any other end it counts
one more delivery of each of its messages, which come again in the next turn. A
message redelivered more than ``max_redeliveries`` times is poison (:func:`drop_poison`): it is
escalated and acked, never retried.
"""

from __future__ import annotations

import msgspec

from chatbox.broker import audit, escalations, messages, offsets
from chatbox.broker.channels import SYSTEM
from chatbox.broker.context import Ctx
from chatbox.broker.states import AgentState
from chatbox.bus import wire
from chatbox.guardrails import AgentHistory, TurnFacts
from chatbox.guardrails.limits import Limits
from chatbox.guardrails.turns import WINDOW_SECONDS as TURN_WINDOW

#: A turn's batch as stored (``turns.batch``, JSON): channel -> the seqs delivered from it.
_batch_decoder = msgspec.json.Decoder(dict[str, list[int]])

#: The spend budget's window.
DAY_SECONDS = 24 * 3600.0


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``turns``: ``batch`` maps each channel to the seqs delivered from it; ``chain``
    and ``hop`` are those of the turn's trigger (its newest message, its highest hop)."""

    id: int
    agent: str
    epoch: int
    batch: dict[str, list[int]]
    chain: int
    hop: int
    started_at: float

    @property
    def seqs(self) -> list[int]:
        return _flat(self.batch)


def _flat(batch: dict[str, list[int]]) -> list[int]:
    return sorted(s for seqs in batch.values() for s in seqs)


def _decode_batch(stored: str) -> dict[str, list[int]]:
    return _batch_decoder.decode(stored) if stored else {}


def batch_seqs(stored: str) -> list[int]:
    """The seqs of a batch as ``turns.batch`` stores it, in order."""
    return _flat(_decode_batch(stored))


def get(ctx: Ctx, turn: int | None) -> Turn | None:
    if turn is None:
        return None
    row = ctx.db.execute("SELECT id, agent, epoch, batch, chain, hop, started_at FROM turns "
                         "WHERE id = ?", (turn,)).fetchone()
    if row is None:
        return None
    id_, agent, epoch, batch, chain, hop, started_at = row
    return Turn(id=id_, agent=agent, epoch=epoch, batch=_decode_batch(batch), chain=chain,
                hop=hop, started_at=started_at)


def _redelivered(ctx: Ctx, agent: str, first: int, last: int) -> dict[int, int]:
    """How many more deliveries each message of seq ``first`` to ``last`` has had to ``agent``
    after turns that did not handle it; a message with none is not in it."""
    return dict(ctx.db.execute(
        "SELECT seq, count FROM redeliveries WHERE agent = ? AND seq BETWEEN ? AND ?",
        (agent, first, last)))


def start(ctx: Ctx, agent: str, epoch: int, batch: list[wire.Message]) -> Turn:
    """Open a turn at ``epoch`` on ``batch`` (oldest first, not empty) and deliver it."""
    counts = _redelivered(ctx, agent, batch[0].seq, batch[-1].seq)
    by_channel: dict[str, list[int]] = {}
    for m in batch:
        by_channel.setdefault(m.channel, []).append(m.seq)
    if counts:  # else none was redelivered, and each is marked so already
        for m in batch:
            m.redelivered = m.seq in counts
    newest = batch[-1]
    hop = max(m.hop for m in batch)
    stored = msgspec.json.encode(by_channel).decode()
    turn = ctx.db.execute(
        "INSERT INTO turns(agent, epoch, batch, chain, hop, started_at) VALUES (?,?,?,?,?,?) "
        "RETURNING id", (agent, epoch, stored, newest.chain, hop, ctx.now)).get
    offsets.deliver(ctx, agent, batch)
    return Turn(id=turn, agent=agent, epoch=epoch, batch=by_channel, chain=newest.chain, hop=hop,
                started_at=ctx.now)


def claimed(ctx: Ctx, first: wire.ClaimResult) -> wire.ClaimResult:
    """A claim's first result again (its replay), from the turn it opened: the batch that turn
    holds, oldest first, each message marked redelivered as :func:`start` marked it, and as it
    is now (a pin or a close since shows; bodies never change). The first result is kept
    without its batch, which would be a copy of up to a whole batch of bodies written at every
    claim."""
    turn = get(ctx, first.turn)
    seqs = turn.seqs if turn is not None else []
    if not seqs:
        return first
    counts = _redelivered(ctx, turn.agent, seqs[0], seqs[-1])
    batch = [msgspec.structs.replace(messages.get(ctx, seq), redelivered=seq in counts)
             for seq in seqs]
    return msgspec.structs.replace(first, messages=batch)


#: A turn of a real CLI whose agent never reached ChatBox did nothing, whatever its exit code.
NOT_CONNECTED = ("the agent never connected to ChatBox: its CLI started no chatbox MCP session "
                 "for this turn (the server failed to start, or the CLI did not wait for it)")


def facts(turn: Turn, now: float, outcome: str, *, exit_code: int | None = None,
          output: str = "", engine_error: bool = False, cause: str | None = None,
          input_tokens: int = 0, output_tokens: int = 0,
          cost_usd: float | None = None) -> TurnFacts:
    """What the guardrails judge of a turn that has just ended."""
    return TurnFacts(turn_id=turn.id, agent=turn.agent, outcome=outcome, exit_code=exit_code,
                     output=output, started_at=turn.started_at, ended_at=now,
                     engine_error=engine_error, cause=cause, input_tokens=input_tokens,
                     output_tokens=output_tokens, cost_usd=cost_usd)


def connect(ctx: Ctx, agent: str, turn: int) -> None:
    """The agent's MCP server for ``turn`` reached the broker (its first Whoami)."""
    ctx.db.execute("UPDATE turns SET connected_at = ? WHERE id = ? AND agent = ? AND "
                   "ended_at IS NULL AND connected_at IS NULL", (ctx.now, turn, agent))


def connected(ctx: Ctx, turn: Turn) -> bool:
    return ctx.db.execute("SELECT connected_at IS NOT NULL FROM turns WHERE id = ?",
                          (turn.id,)).get == 1


def finish(ctx: Ctx, turn: Turn, facts: TurnFacts, outcome: str, *, digest: str | None = None,
           excerpt: str | None = None, output: str | None = None) -> None:
    """Record how ``turn`` ended, with its cause and the usage its CLI reported."""
    ctx.db.execute(
        "UPDATE turns SET ended_at = ?, outcome = ?, exit_code = ?, digest = ?, excerpt = ?, "
        "output = ?, cause = ?, input_tokens = ?, output_tokens = ?, cost_usd = ? WHERE id = ?",
        (ctx.now, outcome, facts.exit_code, digest, excerpt and excerpt[:2000],
         output and output[:65536], facts.cause and facts.cause[:2000], facts.input_tokens,
         facts.output_tokens, facts.cost_usd, turn.id))
    audit.turn_outcome(ctx, turn, outcome, facts.exit_code)


def acks(outcome: str, engine_error: bool = False) -> bool:
    """Whether a turn that ended with ``outcome`` acks its batch: only one that handled it —
    ``ok``, or a deliberate give-up (the agent said so; an engine's own error result is not the
    agent giving up). A failed, timed-out, lost or livelocked turn leaves it due."""
    return outcome == "ok" or (outcome == "gave_up" and not engine_error)


def settle(ctx: Ctx, turn: Turn, outcome: str, engine_error: bool = False) -> dict[str, int]:
    """Ack the batch of a turn that handled it, or count one more delivery of each of its
    messages; return what was acked, channel by channel."""
    if not acks(outcome, engine_error):
        for seq in turn.seqs:
            ctx.db.execute(
                "INSERT INTO redeliveries(agent, seq, count) VALUES (?, ?, 1) "
                "ON CONFLICT(agent, seq) DO UPDATE SET count = count + 1", (turn.agent, seq))
        return {}
    acked = {}
    for channel, seqs in turn.batch.items():
        offsets.set_acked(ctx, turn.agent, channel, max(seqs))
        acked[channel] = max(seqs)
        ctx.db.execute(f"DELETE FROM redeliveries WHERE agent = ? AND seq IN "
                       f"({','.join('?' * len(seqs))})", (turn.agent, *seqs))
    return acked


def drop_poison(ctx: Ctx, agent: str, batch: list[wire.Message], max_redeliveries: int) -> bool:
    """Escalate and ack, never retry, what of ``batch`` was redelivered more than
    ``max_redeliveries`` times; whether anything was dropped."""
    ranged = _redelivered(ctx, agent, batch[0].seq, batch[-1].seq)  # not all of it the batch's
    counts = {seq: n for seq, n in ranged.items() if n > max_redeliveries}
    poison = [m for m in batch if m.seq in counts]
    if not poison:
        return False
    for m in poison:
        offsets.set_acked(ctx, agent, m.channel, m.seq)
        ctx.db.execute("DELETE FROM redeliveries WHERE agent = ? AND seq = ?", (agent, m.seq))
    escalations.post_escalation(
        ctx, author=SYSTEM, agent=agent, chain=poison[-1].chain, guardrail="redelivery",
        reason=f"{len(poison)} message(s) were redelivered more than {max_redeliveries} times "
               "after turns that did not handle them; skipped, not retried",
        evidence=[f"#{m.seq} in {m.channel} ({counts[m.seq]} deliveries): {m.body[:160]}"
                  for m in poison])
    return True


def history_before_turn(ctx: Ctx, row: AgentState, limits: Limits) -> AgentHistory:
    """What the guardrails asked before a turn see of an agent since it was last resumed: the
    starts of its turns of the last hour, as many as its turn budget counts; with a spend
    budget, the usage its turns reported over the last day (a row per turn of the day). Every
    turn of an agent that claims has ended, so its starts are read from the index alone."""
    starts = [t for (t,) in ctx.db.execute(
        "SELECT started_at FROM turns WHERE agent = ? AND started_at >= ? "
        "ORDER BY started_at DESC LIMIT ?",
        (row.agent, max(ctx.now - TURN_WINDOW, row.resumed_at), limits.max_turns_per_hour))]
    tokens, usd = 0, 0.0
    if limits.max_tokens_per_day is not None or limits.max_usd_per_day is not None:
        tokens, usd = ctx.db.execute(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(cost_usd), 0.0) "
            "FROM turns WHERE agent = ? AND started_at >= ?",
            (row.agent, max(ctx.now - DAY_SECONDS, row.resumed_at))).fetchone()
    return AgentHistory(agent=row.agent, turn_starts=starts[::-1],
                        consecutive_failures=row.failures, tokens_today=tokens, usd_today=usd)


def history_after_turn(ctx: Ctx, row: AgentState, limits: Limits, turn: int) -> AgentHistory:
    """What the guardrails asked after ``turn`` see of the ended turns before it since the agent
    was last resumed, oldest first: as many as the livelock detector and the failure circuit
    look back on (``repeat_threshold - 1``, ``max_consecutive_failures - 1``)."""
    rows = ctx.db.execute(
        "SELECT output, exit_code, cause FROM turns WHERE agent = ? AND id < ? AND "
        "outcome IS NOT NULL AND started_at >= ? ORDER BY id DESC LIMIT ?",
        (row.agent, turn, row.resumed_at,
         max(limits.repeat_threshold, limits.max_consecutive_failures) - 1)).fetchall()[::-1]
    return AgentHistory(agent=row.agent, recent_outputs=[r[0] or "" for r in rows],
                        consecutive_failures=row.failures,
                        recent_exit_codes=[r[1] for r in rows],
                        recent_causes=[r[2] for r in rows])
