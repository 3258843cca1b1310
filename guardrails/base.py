"""The base class of every guardrail, in the middleware style of dramatiq.

A guardrail is pure policy: it reads the facts it is handed and either returns (allow) or
raises :class:`~guardrails.errors.Veto` (refuse). It does no I/O, reads no clock and keeps no
state between calls, so the broker may build one per agent, call it from any thread, and
replay a decision from the database alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from chatbox.guardrails.errors import Veto
from chatbox.guardrails.facts import AgentHistory, MessageFacts, TurnFacts
from chatbox.guardrails.limits import Limits


class Guardrail:
    """Base class for guardrails. Every hook is a no-op; subclasses override the ones they need."""

    #: The name a Veto carries, and the escalation shows.
    name: ClassVar[str] = "guardrail"

    def __init__(self, limits: Limits) -> None:
        self.limits = limits

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def veto(self, reason: str, evidence: Iterable[str] = ()) -> Veto:
        """Build (not raise) a Veto signed with this guardrail's name."""
        return Veto(self.name, reason, evidence)

    def on_message(self, msg: MessageFacts) -> None:
        """Called after a message commits, before anyone is woken by it.

        Raise Veto to stop the message waking anyone; the message itself stays in the log.
        """

    def before_turn(self, agent: str, history: AgentHistory, now: float) -> None:
        """Called before a turn starts for ``agent``; ``now`` is the broker's clock in unix seconds.

        Raise Veto to refuse the turn: the agent is paused and a human is asked.
        """

    def after_turn(self, turn: TurnFacts, history: AgentHistory) -> None:
        """Called after a turn ends; ``history`` holds the turns before this one.

        Raise Veto to pause the agent and escalate to a human.
        """
