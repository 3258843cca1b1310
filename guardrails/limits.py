"""The limits every guardrail reads: defaults for all agents, overridable per agent.

A leaf module: decoded from ``[limits]`` and ``[agents.NAME.limits]`` of ``chatbox.toml``
by the config loader, checked by :meth:`Limits.validate`.
"""

from __future__ import annotations

import msgspec

DEFAULT_GIVE_UP_PHRASES: tuple[str, ...] = (
    "i give up",
    "i am giving up",
    "i'm giving up",
    "i cannot complete this task",
    "i can't complete this task",
    "i am unable to complete this task",
    "i'm unable to complete this task",
    "i am stuck and need human help",
    "i'm stuck and need human help",
    "escalating to a human",
)


class Limits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Bounds on one agent's autonomy (DESIGN §5).

    Who reads what: ``max_hops`` the hop budget (``guardrails/hops.py``);
    ``max_turns_per_hour`` the turn budget (``turns.py``); ``repeat_threshold`` and
    ``near_duplicate_ratio`` the livelock detector (``livelock.py``); ``give_up_phrases`` the
    give-up detector (``giveup.py``, whole words after normalisation, so write plain words
    without ``.:;?!``); ``max_consecutive_failures`` the failure circuit (``failures.py``); ``max_tokens_per_day`` and
    ``max_usd_per_day`` the spend budget (``spend.py``).
    The per-turn caps, ``max_redeliveries`` and ``max_batch`` are enforced by the supervisor and
    the broker, not by a guardrail.
    """

    max_hops: int = 6
    max_turns_per_hour: int = 30
    repeat_threshold: int = 3
    near_duplicate_ratio: float = 0.9
    max_consecutive_failures: int = 3
    max_turn_seconds: float = 600.0
    max_output_bytes: int = 1024 * 1024
    kill_grace_seconds: float = 5.0
    max_redeliveries: int = 3
    max_batch: int = 100
    give_up_phrases: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_GIVE_UP_PHRASES))
    # the spend budget (``spend.py``): tokens and dollars the CLI reported over 24 hours;
    # None: no budget
    max_tokens_per_day: int | None = None
    max_usd_per_day: float | None = None

    def validate(self) -> list[str]:
        """Return one sentence per impossible value; empty when all is well."""
        problems = []
        for name in ("max_hops", "max_turns_per_hour", "repeat_threshold",
                     "max_consecutive_failures", "max_output_bytes", "max_batch"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.repeat_threshold < 2:
            problems.append(f"repeat_threshold must be at least 2, got {self.repeat_threshold}")
        if self.max_redeliveries < 0:
            problems.append(f"max_redeliveries must be 0 or more, got {self.max_redeliveries}")
        if not 0.0 < self.near_duplicate_ratio <= 1.0:
            problems.append(f"near_duplicate_ratio must be in (0, 1], got {self.near_duplicate_ratio}")
        if self.max_turn_seconds <= 0:
            problems.append(f"max_turn_seconds must be positive, got {self.max_turn_seconds}")
        if self.kill_grace_seconds < 0:
            problems.append(f"kill_grace_seconds must be 0 or more, got {self.kill_grace_seconds}")
        if self.max_tokens_per_day is not None and self.max_tokens_per_day < 1:
            problems.append(f"max_tokens_per_day must be at least 1, got {self.max_tokens_per_day}")
        if self.max_usd_per_day is not None and self.max_usd_per_day <= 0:
            problems.append(f"max_usd_per_day must be positive, got {self.max_usd_per_day}")
        if any(not p.strip() for p in self.give_up_phrases):
            problems.append("give_up_phrases must not contain an empty phrase")
        return problems
