"""Spend budget (issue 11 item 10): tokens and dollars over 24 hours pause the agent."""

from __future__ import annotations

import pytest

from chatbox.guardrails import AgentHistory, Limits, Policy, Veto
from chatbox.guardrails.spend import SpendBudget


def history(tokens: int = 0, usd: float = 0.0) -> AgentHistory:
    return AgentHistory(agent="kimi", tokens_today=tokens, usd_today=usd)


def test_no_budget_never_refuses():
    SpendBudget(Limits()).before_turn("kimi", history(10**9, 10**6), 0.0)


def test_the_token_budget_refuses_the_turn_once_reached():
    guard = SpendBudget(Limits(max_tokens_per_day=1000))
    guard.before_turn("kimi", history(999), 0.0)
    with pytest.raises(Veto) as veto:
        guard.before_turn("kimi", history(1000), 0.0)
    assert veto.value.guardrail == "spend_budget"
    assert "1000 tokens" in veto.value.reason and "max_tokens_per_day" in veto.value.reason


def test_the_dollar_budget_refuses_the_turn_once_reached():
    guard = SpendBudget(Limits(max_usd_per_day=0.5))
    guard.before_turn("kimi", history(usd=0.4999), 0.0)
    with pytest.raises(Veto, match=r"\$0\.5000"):
        guard.before_turn("kimi", history(usd=0.5), 0.0)


def test_the_policy_asks_it_before_a_turn():
    with pytest.raises(Veto):
        Policy(Limits(max_tokens_per_day=1)).before_turn("kimi", history(5), 0.0)


def test_impossible_budgets_are_named():
    assert Limits(max_tokens_per_day=0).validate() == ["max_tokens_per_day must be at least 1, got 0"]
    assert Limits(max_usd_per_day=-1.0).validate() == ["max_usd_per_day must be positive, got -1.0"]
