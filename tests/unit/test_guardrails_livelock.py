"""Livelock (DESIGN §5): repeating recent outputs repeat_threshold times in a row pauses the agent."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbox.guardrails import AgentHistory, Limits, LivelockDetector, TurnFacts, Veto
from chatbox.guardrails.livelock import MAX_COMPARE_CHARS, is_near_duplicate, normalise, similarity


def turn(output: str) -> TurnFacts:
    return TurnFacts(turn_id=3, agent="dave", outcome="ok", exit_code=0, output=output,
                     started_at=0.0, ended_at=1.0)


def history(*outputs: str) -> AgentHistory:
    return AgentHistory(agent="dave", recent_outputs=list(outputs))


def test_ids_do_not_hide_a_repetition_but_numbers_tell_work_apart():
    """DESIGN §5: outputs are compared as normalised text; the stub's "ack 12 13" is real work."""
    assert normalise("ack 12 13") != normalise("ack 14 15")
    assert normalise("retry 0x1f") == normalise("retry 0x2e") == "retry"
    assert normalise("Done at 2024-01-02T03:04:05Z, id 550e8400-e29b-41d4-a716-446655440000.") == \
        normalise("done at 13:04:05 id a1b2c3d") == "done at id"


def test_normalise_folds_case_spacing_and_punctuation():
    """DESIGN §5: normalised text ignores case, whitespace and punctuation."""
    assert normalise("  Checked #general:\n\tNothing NEW; waiting...  ") == "checked general nothing new waiting"


def test_normalise_keeps_words_that_merely_look_hex():
    """DESIGN §5: normalising must not erase the words that tell outputs apart."""
    assert normalise("add a bad face") == "add a bad face"


def test_similarity_is_one_for_the_same_text_and_low_for_unrelated_text():
    """DESIGN §5: exact or near-duplicate repeats count, distinct outputs do not."""
    assert similarity("Waiting for review.", "waiting for review") == 1.0
    assert similarity("Waiting for review.", "Merged the migration and deployed it") < 0.5


def test_small_edit_is_a_near_duplicate_and_a_new_answer_is_not():
    """DESIGN §5: near-duplicates count as repeats (near_duplicate_ratio, default 0.9)."""
    assert is_near_duplicate("Checked the channel, nothing new to do.", "Checked channels, nothing new to do.", 0.9)
    assert not is_near_duplicate("Checked the channel, nothing new to do.", "Fixed the flaky test in ci.", 0.9)


def test_similarity_of_long_outputs_costs_a_bounded_comparison():
    """DESIGN §5: livelock checks run on every turn, so long outputs are clipped before comparing."""
    head, tail = "alpha " * 200, "omega " * 200
    assert similarity(head + "middle one " * 5000 + tail, head + "other words " * 5000 + tail) == 1.0
    assert len(normalise(head)) < MAX_COMPARE_CHARS


def test_third_repeat_in_a_row_pauses_the_agent():
    """DESIGN §5: repeat_threshold (default 3) near-duplicates in a row pause the agent."""
    with pytest.raises(Veto) as caught:
        LivelockDetector(Limits()).after_turn(
            turn("Checked at 10:02, nothing to do."),
            history("Planning the release.", "Checked at 09:58 - nothing to do", "checked at 10:00: nothing to do"),
        )
    assert caught.value.guardrail == "livelock"
    assert caught.value.evidence == ["Checked at 09:58 - nothing to do", "checked at 10:00: nothing to do", "Checked at 10:02, nothing to do."]


def test_second_repeat_in_a_row_is_not_yet_a_livelock():
    """DESIGN §5: it takes repeat_threshold repeats, not one fewer."""
    LivelockDetector(Limits()).after_turn(turn("nothing to do"), history("Planned the release.", "nothing to do"))


def test_repeats_interrupted_by_a_different_output_are_not_in_a_row():
    """DESIGN §5: repeats count only in a row."""
    LivelockDetector(Limits()).after_turn(turn("nothing to do"), history("nothing to do", "Merged PR", "nothing to do"))


def test_distinct_outputs_never_trip():
    """DESIGN §5: only exact or near-duplicate outputs are a livelock."""
    outputs = ["Opened the file.", "Wrote the parser tests.", "Fixed two failures in the parser."]
    LivelockDetector(Limits()).after_turn(turn("Pushed the branch for review."), history(*outputs))


def test_slowly_drifting_outputs_are_progress_not_a_livelock():
    """DESIGN §5: every output in the run must repeat the others, not only its neighbour."""
    limits = Limits(near_duplicate_ratio=0.8)
    a, b, c = "step one of the plan is done", "step one of the plan is done now ok", "one of the plan is done now ok so far"
    assert is_near_duplicate(a, b, 0.8) and is_near_duplicate(b, c, 0.8) and not is_near_duplicate(a, c, 0.8)
    LivelockDetector(limits).after_turn(turn(c), history(a, b))


def test_empty_outputs_are_not_evidence_of_repetition():
    """DESIGN §5 (our reading): an empty output repeats nothing, so silence is not a livelock."""
    detector = LivelockDetector(Limits())
    detector.after_turn(turn(""), history("", ""))
    detector.after_turn(turn("  0x2a \n"), history("0x11", "0x1f"))
    detector.after_turn(turn("nothing to do"), history("nothing to do", ""))


def test_memory_spans_wakes_because_it_is_the_history_given():
    """DESIGN §5: the memory spans wakes, so a longer history still counts only the last repeats."""
    older = ["different work %d" % i for i in range(50)]
    with pytest.raises(Veto):
        LivelockDetector(Limits(repeat_threshold=4)).after_turn(turn("idle"), history(*older, "Idle.", "idle", "IDLE"))


def test_agent_with_too_short_a_history_cannot_livelock():
    """DESIGN §5: repeat_threshold outputs in a row are needed."""
    LivelockDetector(Limits()).after_turn(turn("idle"), history("idle"))


text = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)


@given(text)
def test_normalise_is_idempotent(t):
    """DESIGN §5: normalised text is a fixed point, so repeats compare alike however often normalised."""
    assert normalise(normalise(t)) == normalise(t)


@given(text, text)
def test_similarity_is_a_ratio_and_one_for_the_same_text(a, b):
    """DESIGN §5: near-duplicate is a similarity in [0, 1]; a text is its own exact duplicate."""
    assert 0.0 <= similarity(a, b) <= 1.0
    assert similarity(a, a) == 1.0


@given(st.lists(st.sampled_from(["nothing to do", "Nothing to do!", "nothing  to do 7"]), min_size=2, max_size=6),
       st.integers(2, 6))
def test_identical_runs_trip_exactly_when_long_enough(previous, threshold):
    """DESIGN §5: repeat_threshold near-duplicates in a row, counting the new turn."""
    detector = LivelockDetector(Limits(repeat_threshold=threshold))
    if len(previous) + 1 >= threshold:
        with pytest.raises(Veto):
            detector.after_turn(turn("nothing to do"), history(*previous))
    else:
        detector.after_turn(turn("nothing to do"), history(*previous))


def test_stub_acks_of_distinct_batches_are_not_a_livelock():
    """DESIGN §6: the stub answers "ack" + its batch's seqs; new seqs are new work."""
    LivelockDetector(Limits()).after_turn(turn("ack 14"), history("ack 12", "ack 13"))
