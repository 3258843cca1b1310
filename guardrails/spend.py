"""Spend budget: the tokens and dollars an agent's CLI reported over the last 24 hours.

Like the turn budget it is asked before a turn: past ``max_tokens_per_day`` or
``max_usd_per_day`` the turn is refused, and the broker pauses the agent and asks a human. The
turn that crosses the line runs to its end (its usage is known only then). Usage counts from a
human's resume, if that is more recent: resuming an agent is a decision to spend more.
"""

from __future__ import annotations

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import AgentHistory


class SpendBudget(Guardrail):
    """Refuses a turn once the day's reported usage reached the agent's budget."""

    name = "spend_budget"

    def before_turn(self, agent: str, history: AgentHistory, now: float) -> None:
        tokens, usd = self.limits.max_tokens_per_day, self.limits.max_usd_per_day
        if tokens is not None and history.tokens_today >= tokens:
            raise self.veto(
                f"Agent {agent} has used {history.tokens_today} tokens today, the budget of "
                f"{tokens} (max_tokens_per_day).",
                [f"{history.tokens_today} tokens reported by its turns in the last 24 hours"])
        if usd is not None and history.usd_today >= usd:
            raise self.veto(
                f"Agent {agent} has spent ${history.usd_today:.4f} today, the budget of "
                f"${usd:.4f} (max_usd_per_day).",
                [f"${history.usd_today:.4f} reported by its turns in the last 24 hours"])
