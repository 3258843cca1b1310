"""Hop budget: two agents can never ping-pong forever (DESIGN §5).

Every message carries a chain id and a hop count. A human's post starts a chain at hop 0; a
post made inside a turn joins the chain of the turn's trigger at one hop further. A message
whose hop has reached ``max_hops`` wakes nobody. Sending one escalation per chain to
``#alerts`` needs memory, so it is the broker's job; this module only decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import MessageFacts


class HopBudget(Guardrail):
    """Stops a message waking anyone once its chain has used up ``max_hops``."""

    name = "hop_budget"

    @staticmethod
    def start_hop() -> int:
        """The hop of a post that starts a chain (a human's post): 0."""
        return 0

    @staticmethod
    def next_hop(trigger_hops: Iterable[int]) -> int:
        """The hop of a post made inside a turn: one more than the furthest of its triggers.

        A turn with no trigger still yields hop 1, never 0: only a human starts a chain.
        """
        return max(trigger_hops, default=HopBudget.start_hop()) + 1

    def wakes(self, hop: int) -> bool:
        """Whether a message at ``hop`` may wake anyone (False once ``hop >= max_hops``)."""
        return hop < self.limits.max_hops

    def on_message(self, msg: MessageFacts) -> None:
        """Veto a message whose chain has reached the hop budget."""
        if self.wakes(msg.hop):
            return
        raise self.veto(
            f"Chain {msg.chain} reached hop {msg.hop}, the budget of {self.limits.max_hops} hops, "
            f"so message {msg.seq} in {msg.channel} wakes nobody.",
            [
                f"chain {msg.chain}",
                f"hop {msg.hop} (max_hops {self.limits.max_hops})",
                f"message {msg.seq} in {msg.channel} by {msg.author} ({msg.author_role})",
            ],
        )
