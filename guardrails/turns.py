"""Turn budget: at most ``max_turns_per_hour`` turns per agent (DESIGN §5).

The window slides: a turn counts while it started less than an hour before ``now``. Past the
budget the turn is refused; the broker pauses the agent and asks a human.
"""

from __future__ import annotations

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import AgentHistory

#: The width of the sliding window, in seconds.
WINDOW_SECONDS = 3600.0


def turns_in_window(history: AgentHistory, now: float) -> list[float]:
    """The start times of the turns that count against the budget at ``now``, oldest first."""
    return sorted(t for t in history.turn_starts if now - t < WINDOW_SECONDS)


class TurnBudget(Guardrail):
    """Refuses a turn once the agent has started ``max_turns_per_hour`` in the last hour."""

    name = "turn_budget"

    def before_turn(self, agent: str, history: AgentHistory, now: float) -> None:
        """Veto the turn when the last hour already holds the budget's worth of turns."""
        recent = turns_in_window(history, now)
        budget = self.limits.max_turns_per_hour
        if len(recent) < budget:
            return
        raise self.veto(
            f"Agent {agent} has started {len(recent)} turns in the last hour, "
            f"the budget of {budget} turns per hour.",
            [
                f"{len(recent)} turns started in the last {WINDOW_SECONDS:.0f} s (max_turns_per_hour {budget})",
                f"oldest counted turn started at {recent[0]:.0f}, newest at {recent[-1]:.0f} (unix seconds)",
                f"the budget frees a turn at {recent[-budget] + WINDOW_SECONDS:.0f} (unix seconds)",
            ],
        )
