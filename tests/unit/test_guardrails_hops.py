"""Hop budget (DESIGN §5): chains start at hop 0 and stop waking anyone at max_hops."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbox.guardrails import HopBudget, Limits, MessageFacts, Veto


def message(hop: int, chain: int = 7) -> MessageFacts:
    return MessageFacts(seq=42, channel="#dev", author="alice", author_role="agent", chain=chain, hop=hop, tier=0)


def test_human_post_starts_a_chain_at_hop_zero():
    """DESIGN §5: a human's post starts a chain at hop 0."""
    assert HopBudget.start_hop() == 0
    assert HopBudget(Limits()).start_hop() == 0


def test_post_inside_a_turn_is_one_hop_past_its_furthest_trigger():
    """DESIGN §5: a post made inside a turn gets the chain of the turn's trigger and hop + 1."""
    assert HopBudget.next_hop([0]) == 1
    assert HopBudget.next_hop([2, 5, 3]) == 6


def test_post_inside_a_turn_without_triggers_is_never_hop_zero():
    """DESIGN §5: only a human's post starts a chain at hop 0."""
    assert HopBudget.next_hop([]) == 1


def test_message_one_hop_below_the_budget_still_wakes():
    """DESIGN §5: only a hop that has reached max_hops wakes nobody."""
    budget = HopBudget(Limits(max_hops=6))
    assert budget.wakes(5)
    budget.on_message(message(hop=5))


def test_message_exactly_at_the_budget_wakes_nobody():
    """DESIGN §5: a message whose hop has reached max_hops (default 6) wakes nobody."""
    budget = HopBudget(Limits())
    assert not budget.wakes(6)
    with pytest.raises(Veto) as caught:
        budget.on_message(message(hop=6, chain=7))
    assert caught.value.guardrail == "hop_budget"
    assert any("chain 7" in e for e in caught.value.evidence)
    assert any("hop 6" in e for e in caught.value.evidence)


def test_human_post_wakes_even_with_the_smallest_budget():
    """DESIGN §5: a chain starts at hop 0, which every valid budget (max_hops >= 1) allows."""
    HopBudget(Limits(max_hops=1)).on_message(message(hop=0))


@given(max_hops=st.integers(1, 50), hop=st.integers(0, 200))
def test_no_hop_at_or_past_max_hops_ever_wakes(max_hops, hop):
    """DESIGN §5: two agents can never ping-pong forever."""
    budget = HopBudget(Limits(max_hops=max_hops))
    assert budget.wakes(hop) == (hop < max_hops)


@given(max_hops=st.integers(1, 20))
def test_a_ping_pong_between_two_agents_stops_within_max_hops_replies(max_hops):
    """DESIGN §5: each reply is one hop further, so a reply loop ends after max_hops posts."""
    budget = HopBudget(Limits(max_hops=max_hops))
    hop, replies = budget.start_hop(), 0
    while budget.wakes(hop):
        hop = budget.next_hop([hop])
        replies += 1
    assert replies == max_hops
    with pytest.raises(Veto):
        budget.on_message(message(hop=hop))


@given(st.lists(st.integers(0, 1000), min_size=1))
def test_next_hop_is_past_every_trigger(hops):
    """DESIGN §5: hop + 1 of the trigger, so a chain's hop never goes down."""
    assert HopBudget.next_hop(hops) == max(hops) + 1
