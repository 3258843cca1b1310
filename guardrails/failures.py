"""Failure circuit: ``max_consecutive_failures`` failed turns in a row open it (DESIGN §5); the
broker then pauses the agent and escalates.

A turn fails when its process did: the supervisor reported it ``failed`` (it crashed or exited
non-zero) or ``timeout`` (a cap killed it), or the broker recorded it ``lost`` (its supervisor
died with it). :func:`is_failure` is the one definition, used by the circuit and by the broker
for both a reported and a lost turn. ``livelock``, ``gave_up`` and ``vetoed`` are verdicts of the
guardrails on a turn whose process ran to its end, not failures of it.

The run of failures is the broker's memory (``AgentHistory.consecutive_failures``): a turn that
is not a failure ends it, and so does a human's pause or resume.
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


def _because(cause: str | None) -> str:
    return f": {cause}" if cause else ""


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
        n = failures - 1
        codes = history.recent_exit_codes[-n:] if n else []
        causes = (history.recent_causes[-n:] if n else [])
        causes = [None] * (len(codes) - len(causes)) + list(causes)
        evidence = [f"earlier failed turn: {_describe(code)}{_because(cause)}"
                    for code, cause in zip(codes, causes)]
        evidence.append(f"turn {turn.turn_id}: {turn.outcome}, {_describe(turn.exit_code)}"
                        f"{_because(turn.cause)}")
        raise self.veto(
            f"Agent {turn.agent} has failed {failures} turns in a row "
            f"(max_consecutive_failures {limit}); the last ended {turn.outcome}.",
            evidence,
        )
