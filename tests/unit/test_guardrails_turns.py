"""Turn budget (DESIGN §5): at most max_turns_per_hour turns per agent."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbox.guardrails import AgentHistory, Limits, TurnBudget, Veto

NOW = 1_700_000_000.0


def history(starts):
    return AgentHistory(agent="bob", turn_starts=list(starts))


def test_turn_one_below_the_budget_starts():
    """DESIGN §5: at most max_turns_per_hour turns per agent (default 30)."""
    TurnBudget(Limits()).before_turn("bob", history(NOW - 60 * i for i in range(29)), NOW)


def test_turn_exactly_at_the_budget_is_refused():
    """DESIGN §5: past max_turns_per_hour the agent is paused and a human is asked."""
    with pytest.raises(Veto) as caught:
        TurnBudget(Limits()).before_turn("bob", history(NOW - 60 * i for i in range(30)), NOW)
    assert caught.value.guardrail == "turn_budget"
    assert "bob" in caught.value.reason
    assert any("30 turns" in e for e in caught.value.evidence)


def test_turns_older_than_an_hour_do_not_count():
    """DESIGN §5: the budget is per hour, so older turns are forgotten."""
    budget = TurnBudget(Limits(max_turns_per_hour=2))
    budget.before_turn("bob", history([NOW - 3600.0, NOW - 5000.0, NOW - 10]), NOW)


def test_turn_just_inside_the_hour_counts():
    """DESIGN §5: a turn that started less than an hour ago counts against the budget."""
    budget = TurnBudget(Limits(max_turns_per_hour=2))
    with pytest.raises(Veto):
        budget.before_turn("bob", history([NOW - 3599.5, NOW - 10]), NOW)


def test_veto_says_when_the_budget_frees_a_turn():
    """DESIGN §5: the human asked needs to know when the agent could go on."""
    budget = TurnBudget(Limits(max_turns_per_hour=2))
    with pytest.raises(Veto) as caught:
        budget.before_turn("bob", history([NOW - 100, NOW - 3000, NOW - 50]), NOW)
    assert any(f"{NOW - 100 + 3600:.0f}" in e for e in caught.value.evidence)


def test_agent_with_no_turns_may_start_one():
    """DESIGN §5: the budget only limits turns already taken."""
    TurnBudget(Limits(max_turns_per_hour=1)).before_turn("bob", history([]), NOW)


@given(
    budget=st.integers(1, 40),
    ages=st.lists(st.floats(0, 7200, allow_nan=False), max_size=60),
)
def test_turn_is_refused_exactly_when_the_last_hour_is_full(budget, ages):
    """DESIGN §5: at most max_turns_per_hour turns in any hour."""
    starts = [NOW - age for age in ages]
    in_hour = sum(1 for t in starts if NOW - t < 3600)
    guard = TurnBudget(Limits(max_turns_per_hour=budget))
    if in_hour >= budget:
        with pytest.raises(Veto):
            guard.before_turn("bob", history(starts), NOW)
    else:
        guard.before_turn("bob", history(starts), NOW)
