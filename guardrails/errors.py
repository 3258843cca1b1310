"""Errors raised by the guardrails: one base class, and the ``Veto`` every hook may raise."""

from __future__ import annotations

from collections.abc import Iterable


class GuardrailError(Exception):
    """Base class of every error raised by the guardrails package."""


class InvalidLimits(GuardrailError):
    """The limits given to a policy are impossible (see ``Limits.validate``)."""


class Veto(GuardrailError):
    """A guardrail refuses: a message wakes nobody, a turn does not start, or an agent is paused.

    ``guardrail`` names the guardrail that refused (``hop_budget``, ``turn_budget``,
    ``livelock``, ``give_up``, ``failure_circuit``), ``reason`` is one sentence for a human,
    and ``evidence`` lists what it saw (the repeated outputs, the matched phrase, the exit
    codes) so the escalation in ``#alerts`` can show it.
    """

    def __init__(self, guardrail: str, reason: str, evidence: Iterable[str] = ()) -> None:
        super().__init__(reason)
        self.guardrail = guardrail
        self.reason = reason
        self.evidence = list(evidence)

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"Veto(guardrail={self.guardrail!r}, reason={self.reason!r}, evidence={self.evidence!r})"

    def __reduce__(self):  # keeps a Veto picklable despite the keyword-rich constructor
        return (type(self), (self.guardrail, self.reason, self.evidence))
