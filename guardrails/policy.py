"""The policy: every guardrail in order, asked at each of the broker's three decision points.

The broker keeps one ``Policy`` per agent, built from that agent's limits (the defaults with its
overrides) and rebuilt when they change. It calls :meth:`Policy.on_message` before a message
wakes the agent, :meth:`Policy.before_turn` before a claim opens a turn and
:meth:`Policy.after_turn` when a turn is reported or lost; it takes the hop of every post from
:meth:`Policy.start_hop` and :meth:`Policy.next_hop`, and counts failed turns with
:meth:`Policy.is_failure`. Each hook runs the hook of every guardrail in order; the first
``Veto`` propagates and the rest are not asked. What a Veto leads to (no wakes; a paused agent
and a tier-2 post to ``#alerts`` naming the agent, the chain, the reason and the evidence) is the
broker's job.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.errors import InvalidLimits
from chatbox.guardrails.facts import AgentHistory, MessageFacts, TurnFacts
from chatbox.guardrails.failures import FailureCircuit, is_failure
from chatbox.guardrails.giveup import GiveUpDetector
from chatbox.guardrails.hops import HopBudget
from chatbox.guardrails.limits import Limits
from chatbox.guardrails.livelock import LivelockDetector
from chatbox.guardrails.spend import SpendBudget
from chatbox.guardrails.turns import TurnBudget

#: The guardrails a policy runs unless told otherwise, in order. After a turn, the failure
#: circuit speaks first (the process's fate is a plain fact), then give-up (the agent's own
#: word), then livelock (an inference from several turns).
DEFAULT_GUARDRAILS: tuple[type[Guardrail], ...] = (
    HopBudget, TurnBudget, SpendBudget, FailureCircuit, GiveUpDetector, LivelockDetector,
)


class Policy:
    """An ordered list of guardrails built from one ``Limits``; the first Veto wins."""

    def __init__(self, limits: Limits, guardrails: Iterable[Guardrail] | None = None) -> None:
        problems = limits.validate()
        if problems:
            raise InvalidLimits("; ".join(problems))
        self.limits = limits
        self.hops = HopBudget(limits)
        if guardrails is None:
            guardrails = [self.hops if cls is HopBudget else cls(limits) for cls in DEFAULT_GUARDRAILS]
        self.guardrails: list[Guardrail] = list(guardrails)

    def __repr__(self) -> str:
        return f"Policy({self.guardrails!r})"

    def on_message(self, msg: MessageFacts) -> None:
        """Ask every guardrail whether ``msg`` may wake anyone; raise the first Veto."""
        for guardrail in self.guardrails:
            guardrail.on_message(msg)

    def before_turn(self, agent: str, history: AgentHistory, now: float) -> None:
        """Ask every guardrail whether ``agent`` may start a turn at ``now``; raise the first Veto."""
        for guardrail in self.guardrails:
            guardrail.before_turn(agent, history, now)

    def after_turn(self, turn: TurnFacts, history: AgentHistory) -> None:
        """Ask every guardrail whether the agent may go on after ``turn``; raise the first Veto."""
        for guardrail in self.guardrails:
            guardrail.after_turn(turn, history)

    def next_hop(self, trigger_hops: Iterable[int]) -> int:
        """The hop of a post made inside a turn triggered by messages at ``trigger_hops``."""
        return self.hops.next_hop(trigger_hops)

    def start_hop(self) -> int:
        """The hop of a post that starts a chain: 0."""
        return self.hops.start_hop()

    @staticmethod
    def is_failure(outcome: str) -> bool:
        """Whether a turn with this outcome counts towards the failure circuit."""
        return is_failure(outcome)
