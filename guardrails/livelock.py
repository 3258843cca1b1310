"""Livelock: an agent that keeps producing the same output is stuck, not working (DESIGN §5).

A turn whose output, together with the ``repeat_threshold - 1`` outputs before it, makes
``repeat_threshold`` near-duplicates in a row pauses the agent and escalates. The history the
broker passes spans wakes, so the repetition may be spread over many wakes.

Choices:

* Outputs are compared after :func:`normalise`, so counters, ids and timestamps that change
  from turn to turn do not hide a repetition.
* Every pair in the run must be near-duplicates, not only neighbours: output that drifts a
  little each turn is progress, not a loop.
* An output that is empty after normalisation is not evidence of repetition: it neither trips
  the detector nor counts towards a run, and it breaks a run it falls inside.
* To bound the cost (``SequenceMatcher`` is quadratic), only the first and last
  ``MAX_COMPARE_CHARS // 2`` characters of a long normalised output are compared: two long
  outputs with the same beginning and end count as the same.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from itertools import combinations

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import AgentHistory, TurnFacts
from chatbox.guardrails.text import excerpt, normalise

__all__ = ["MAX_COMPARE_CHARS", "LivelockDetector", "is_near_duplicate", "normalise", "similarity"]

#: How many characters of a normalised output are compared (head and tail halves).
MAX_COMPARE_CHARS = 2048


def _clip(text: str) -> str:
    if len(text) <= MAX_COMPARE_CHARS:
        return text
    half = MAX_COMPARE_CHARS // 2
    return text[:half] + " " + text[-half:]


def _ratio(a: str, b: str, floor: float = 0.0) -> float:
    """The similarity of two normalised texts; any value below ``floor`` may be an underestimate."""
    if a == b:
        return 1.0
    matcher = SequenceMatcher(None, _clip(a), _clip(b), autojunk=False)
    if matcher.real_quick_ratio() < floor or matcher.quick_ratio() < floor:
        return 0.0
    return matcher.ratio()


def similarity(a: str, b: str) -> float:
    """How alike two outputs are once normalised, from 0.0 (nothing shared) to 1.0 (the same)."""
    return _ratio(normalise(a), normalise(b))


def is_near_duplicate(a: str, b: str, ratio: float) -> bool:
    """Whether two outputs are alike enough (``similarity >= ratio``) to count as a repeat."""
    na, nb = normalise(a), normalise(b)
    return bool(na and nb) and _ratio(na, nb, floor=ratio) >= ratio


class LivelockDetector(Guardrail):
    """Pauses an agent whose last ``repeat_threshold`` outputs are all near-duplicates."""

    name = "livelock"

    def after_turn(self, turn: TurnFacts, history: AgentHistory) -> None:
        """Veto when this output completes a run of ``repeat_threshold`` near-duplicates."""
        run = self.repeated_run(turn.output, history.recent_outputs)
        if run is None:
            return
        outputs, lowest = run
        ratio = self.limits.near_duplicate_ratio
        raise self.veto(
            f"Agent {turn.agent} produced near-identical output {len(outputs)} turns in a row "
            f"(lowest similarity {lowest:.2f}, near_duplicate_ratio {ratio:.2f}).",
            [excerpt(output, 160) for output in outputs],
        )

    def repeated_run(self, output: str, previous: list[str]) -> tuple[list[str], float] | None:
        """The run of outputs (oldest first) and its lowest similarity, or None if no livelock."""
        earlier = self.limits.repeat_threshold - 1
        if len(previous) < earlier:
            return None
        outputs = [*previous[len(previous) - earlier:], output]
        texts = [normalise(o) for o in outputs]
        if not all(texts):
            return None
        ratio = self.limits.near_duplicate_ratio
        lowest = 1.0
        # Newest pairs first: an ordinary turn is usually told apart by the first comparison.
        for i, j in sorted(combinations(range(len(texts)), 2), key=lambda p: (-p[1], -p[0])):
            score = _ratio(texts[i], texts[j], floor=ratio)
            if score < ratio:
                return None
            lowest = min(lowest, score)
        return outputs, lowest
