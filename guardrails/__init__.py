"""Bounded autonomy (DESIGN §5): pure policy deciding whether a message wakes anyone, whether a
turn may start, and whether an agent must be paused after a turn.

Guardrails are middleware: small classes with documented no-op hooks that raise :class:`Veto`.
They do no I/O and read no clock; the broker hands them facts and the time.
"""

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.errors import GuardrailError, InvalidLimits, Veto
from chatbox.guardrails.facts import AgentHistory, MessageFacts, TurnFacts
from chatbox.guardrails.failures import FAILURE_OUTCOMES, FailureCircuit, is_failure
from chatbox.guardrails.giveup import GiveUpDetector
from chatbox.guardrails.hops import HopBudget
from chatbox.guardrails.limits import Limits
from chatbox.guardrails.livelock import LivelockDetector, is_near_duplicate, similarity
from chatbox.guardrails.policy import DEFAULT_GUARDRAILS, Policy
from chatbox.guardrails.text import normalise
from chatbox.guardrails.turns import WINDOW_SECONDS, TurnBudget

__all__ = [
    "DEFAULT_GUARDRAILS",
    "FAILURE_OUTCOMES",
    "WINDOW_SECONDS",
    "AgentHistory",
    "FailureCircuit",
    "GiveUpDetector",
    "Guardrail",
    "GuardrailError",
    "HopBudget",
    "InvalidLimits",
    "Limits",
    "LivelockDetector",
    "MessageFacts",
    "Policy",
    "TurnBudget",
    "TurnFacts",
    "Veto",
    "is_failure",
    "is_near_duplicate",
    "normalise",
    "similarity",
]
