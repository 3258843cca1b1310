"""Failure circuit (DESIGN §5): max_consecutive_failures crashed or timed-out turns open it."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbox.guardrails import AgentHistory, FailureCircuit, Limits, Policy, TurnFacts, Veto, is_failure

OUTCOMES = ["ok", "failed", "timeout", "livelock", "gave_up", "lost", "vetoed"]


def turn(outcome: str, exit_code: int | None = 1) -> TurnFacts:
    return TurnFacts(turn_id=9, agent="carol", outcome=outcome, exit_code=exit_code,
                     output="", started_at=0.0, ended_at=1.0)


def history(failures: int, codes=()) -> AgentHistory:
    return AgentHistory(agent="carol", consecutive_failures=failures, recent_exit_codes=list(codes))


def test_crashed_timed_out_and_lost_turns_are_failures():
    """DESIGN §5: crashed or timed-out turns open the circuit; a lost turn died with its supervisor."""
    assert [o for o in OUTCOMES if is_failure(o)] == ["failed", "timeout", "lost"]
    assert Policy.is_failure("timeout") and not Policy.is_failure("ok")


def test_third_failure_in_a_row_opens_the_circuit():
    """DESIGN §5: max_consecutive_failures (default 3) failed turns pause the agent."""
    with pytest.raises(Veto) as caught:
        FailureCircuit(Limits()).after_turn(turn("timeout", exit_code=-15), history(2, [0, 1, 2]))
    assert caught.value.guardrail == "failure_circuit"
    assert caught.value.evidence == [
        "earlier failed turn: exit code 1",
        "earlier failed turn: exit code 2",
        "turn 9: timeout, exit code -15",
    ]


def test_second_failure_in_a_row_leaves_the_circuit_closed():
    """DESIGN §5: the circuit opens at max_consecutive_failures, not one before."""
    FailureCircuit(Limits()).after_turn(turn("failed"), history(1, [1]))


def test_successful_turn_never_opens_the_circuit():
    """DESIGN §5: only crashed or timed-out turns count."""
    FailureCircuit(Limits()).after_turn(turn("ok", exit_code=0), history(5, [1, 1, 1, 1, 1]))


def test_lost_turn_without_exit_code_is_listed_as_such():
    """DESIGN §5: the escalation names the evidence, even when a turn left no exit code."""
    with pytest.raises(Veto) as caught:
        FailureCircuit(Limits(max_consecutive_failures=1)).after_turn(turn("lost", None), history(0))
    assert caught.value.evidence == ["turn 9: lost, no exit code"]


@given(outcome=st.sampled_from(OUTCOMES), before=st.integers(0, 10), limit=st.integers(1, 10))
def test_circuit_opens_exactly_when_the_failure_run_reaches_the_limit(outcome, before, limit):
    """DESIGN §5: max_consecutive_failures failed turns in a row open the circuit."""
    guard = FailureCircuit(Limits(max_consecutive_failures=limit))
    if is_failure(outcome) and before + 1 >= limit:
        with pytest.raises(Veto):
            guard.after_turn(turn(outcome), history(before))
    else:
        guard.after_turn(turn(outcome), history(before))
