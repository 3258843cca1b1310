"""Failure circuit: ``max_consecutive_failures`` crashed or timed-out turns in a row open it
(DESIGN §5); the broker pauses the agent and escalates.

A turn fails when its outcome is ``failed``, ``timeout`` or ``lost``. A turn the guardrails
stopped (``livelock``, ``gave_up``, ``vetoed``) is not a failure of the agent's process.
"""

from __future__ import annotations

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import AgentHistory, TurnFacts

FAILURE_OUTCOMES: frozenset[str] = frozenset({"failed", "timeout", "lost"})


def is_failure(outcome: str) -> bool:
    """Whether a turn with this outcome counts towards the failure circuit."""
    return outcome in FAILURE_OUTCOMES


def _describe(exit_code: int | None) -> str:
    return "no exit code" if exit_code is None else f"exit code {exit_code}"


class FailureCircuit(Guardrail):
    """Opens after ``max_consecutive_failures`` failed turns in a row."""

    name = "failure_circuit"

    def after_turn(self, turn: TurnFacts, history: AgentHistory) -> None:
        """Veto a failed turn that completes a run of ``max_consecutive_failures``."""
        if not is_failure(turn.outcome):
            return
        failures = history.consecutive_failures + 1
        limit = self.limits.max_consecutive_failures
        if failures < limit:
            return
        earlier = history.recent_exit_codes[-(failures - 1):] if failures > 1 else []
        evidence = [f"earlier failed turn: {_describe(code)}" for code in earlier]
        evidence.append(f"turn {turn.turn_id}: {turn.outcome}, {_describe(turn.exit_code)}")
        raise self.veto(
            f"Agent {turn.agent} has failed {failures} turns in a row "
            f"(max_consecutive_failures {limit}); the last ended {turn.outcome}.",
            evidence,
        )
