"""The dispatcher's states, its allowed transitions, and the typed row of one agent's state.

A leaf module, after supervisord's ``supervisor/states.py``: it imports nothing of ours. The one
writer of ``agent_state`` and ``transitions`` (``broker/fsm.py``) checks every change against
:data:`TRANSITIONS`; DESIGN §4 tells the story in words.
"""

from __future__ import annotations

import msgspec

ASLEEP = "ASLEEP"
WAKING = "WAKING"
BUSY = "BUSY"
STATES = (ASLEEP, WAKING, BUSY)

#: Every allowed change, ``(from, to) -> why``. The reason is the comment; the cause written to
#: ``transitions`` says which message, claim, turn or person made it happen.
TRANSITIONS: dict[tuple[str, str], str] = {
    # ASLEEP -> WAKING: a message is due (a post, a decision, work pending at Hello, a resume);
    # the wake is published after the commit
    (ASLEEP, WAKING): "a message is due",
    # WAKING -> BUSY: the supervisor claimed the wake with its epoch; a turn opens on the batch
    (WAKING, BUSY): "the wake was claimed",
    # WAKING -> ASLEEP: the claim found nothing due (acked meanwhile, paused, or a guardrail
    # refused the turn)
    (WAKING, ASLEEP): "the claim found an empty batch",
    # BUSY -> ASLEEP: the turn was reported, or lost with its supervisor, and nothing more is due
    (BUSY, ASLEEP): "the turn ended",
    # BUSY -> WAKING: the turn was reported and more is due (what arrived meanwhile, or the batch
    # of a failed turn): one next turn drains it all
    (BUSY, WAKING): "the turn ended and more is due",
    # X -> X: paused or resumed, by a human or a guardrail trip; the state itself stays
    (ASLEEP, ASLEEP): "paused or resumed",
    (WAKING, WAKING): "paused or resumed",
    (BUSY, BUSY): "paused or resumed",
}

#: Entering these states bumps the epoch (the fencing token): a claim must carry the epoch of
#: the wake it answers, a report the epoch of its turn.
BUMPS_EPOCH = frozenset({WAKING, BUSY})


def allowed(frm: str, to: str, *, pausing: bool) -> bool:
    """Whether ``frm -> to`` is in the table; a state stays the same only to pause or resume."""
    return (frm, to) in TRANSITIONS and (frm == to) == pausing


#: The columns of ``agent_state`` that :meth:`AgentState.from_row` reads, in order.
COLUMNS = ("agent, state, epoch, current_turn, supervisor, paused, paused_reason, failures, "
           "resumed_at")


class AgentState(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``agent_state``: where an agent's state machine stands."""

    agent: str
    state: str
    epoch: int
    current_turn: int | None
    supervisor: str | None
    paused: bool
    paused_reason: str | None
    failures: int  # consecutive failed turns, the failure circuit's count
    resumed_at: float  # the guardrails remember the turns since then

    @classmethod
    def from_row(cls, row: tuple) -> AgentState:
        agent, state, epoch, turn, sup, paused, reason, failures, resumed_at = row
        return cls(agent=agent, state=state, epoch=epoch, current_turn=turn, supervisor=sup,
                   paused=bool(paused), paused_reason=reason, failures=failures,
                   resumed_at=resumed_at)
