"""The facts a guardrail judges: plain, frozen values the broker gathers before asking.

A leaf module. Guardrails never look anything up themselves; whatever they need (a message's
chain and hop, a turn's outcome and output, an agent's recent history, the current time) is
handed to them in one of these Structs or as an argument.
"""

from __future__ import annotations

import msgspec


class MessageFacts(msgspec.Struct, frozen=True):
    """A message that has just committed and may wake its channel's subscribers."""

    seq: int
    channel: str
    author: str
    author_role: str
    chain: int
    hop: int
    tier: int


class TurnFacts(msgspec.Struct, frozen=True):
    """A turn that has just ended, as its supervisor reported it."""

    turn_id: int
    agent: str
    outcome: str  # ok|failed|timeout|livelock|gave_up|lost|vetoed
    exit_code: int | None
    output: str
    started_at: float
    ended_at: float
    engine_error: bool = False
    cause: str | None = None  # the CLI's own words for a failure, where it gave any
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None


class AgentHistory(msgspec.Struct, frozen=True):
    """What the broker remembers of an agent's recent turns (spanning wakes, DESIGN §5).

    It describes the turns *before* the one being judged: ``recent_outputs`` oldest first and
    newest last, ``turn_starts`` in unix seconds, ``consecutive_failures`` the length of the
    current run of failed turns, ``recent_exit_codes`` oldest first.
    """

    agent: str
    recent_outputs: list[str] = msgspec.field(default_factory=list)
    turn_starts: list[float] = msgspec.field(default_factory=list)
    consecutive_failures: int = 0
    recent_exit_codes: list[int | None] = msgspec.field(default_factory=list)
    recent_causes: list[str | None] = msgspec.field(default_factory=list)  # as the exit codes
    # what the agent's turns of the last 24 hours used (since a resume, if more recent)
    tokens_today: int = 0
    usd_today: float = 0.0
