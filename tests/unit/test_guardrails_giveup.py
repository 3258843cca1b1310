"""Give-up (DESIGN §5): precise give-up phrases, or the engine's own error result, escalate."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chatbox.guardrails import AgentHistory, GiveUpDetector, Limits, TurnFacts, Veto

DETECTOR = GiveUpDetector(Limits())


def turn(output: str, engine_error: bool = False) -> TurnFacts:
    return TurnFacts(turn_id=5, agent="erin", outcome="ok", exit_code=0, output=output,
                     started_at=0.0, ended_at=1.0, engine_error=engine_error)


HISTORY = AgentHistory(agent="erin")


@pytest.mark.parametrize(("output", "phrase"), [
    ("I give up.", "i give up"),
    ("Tried three parsers. None of them work; I give up", "i give up"),
    ("I’m giving up on this task.", "i am giving up"),
    ("I CAN'T COMPLETE THIS TASK: the repo is gone.", "i cannot complete this task"),
    ("Not sure what else to try, I give up.", "i give up"),
    ("No, I give up", "i give up"),
    ("As I said before, I give up.", "i give up"),
    ("I am stuck and need human help!", "i am stuck and need human help"),
    ("Escalating to a human.", "escalating to a human"),
])
def test_stated_give_up_is_found(output, phrase):
    """DESIGN §5: give-up phrases in the output escalate."""
    assert DETECTOR.find(output) == phrase


@pytest.mark.parametrize("output", [
    "That file doesn't exist yet, creating it.",
    "I can't find the file, so I created it.",
    "Don't give up on the migration; it is nearly done.",
    "I won't give up on this.",
    "I'm not giving up yet: trying the parser next.",
    "I can complete this task once the token arrives.",
    "I'm not escalating to a human yet.",
    "Never say I give up.",
    "Should I give up?",
    "If the build fails again, I give up.",
    "I give up if the tests fail again tomorrow.",
    "Before I give up, let me try the parser.",
    'The user wrote "I give up" in the ticket.',
    "The test asserts `I give up` is printed.",
    "> I give up\nThat quote is from the old thread; the fix is merged.",
    "```\nprint('I give up')\n```\nAdded a fallback instead.",
    "They gave up on the old branch.",
    "I gave the upgrade a try and it works.",
])
def test_ordinary_answer_does_not_trip_give_up(output):
    """DESIGN §5: the phrase list is short and precise; ordinary answers must not escalate."""
    assert DETECTOR.find(output) is None
    DETECTOR.after_turn(turn(output), HISTORY)


def test_phrase_must_match_whole_words():
    """DESIGN §5: precise phrases, so a phrase inside a longer word is not a match."""
    assert DETECTOR.find("Hi give upgrades to everyone.") is None
    assert DETECTOR.find("escalating to a humane society") is None


def test_give_up_phrase_vetoes_with_the_phrase_as_evidence():
    """DESIGN §5: the escalation names the reason and the evidence."""
    with pytest.raises(Veto) as caught:
        DETECTOR.after_turn(turn("Nothing works. I give up."), HISTORY)
    assert caught.value.guardrail == "give_up"
    assert "phrase: i give up" in caught.value.evidence
    assert any("I give up" in e for e in caught.value.evidence)


def test_engine_error_result_vetoes_even_without_a_phrase():
    """DESIGN §5: the engine's own error result escalates."""
    with pytest.raises(Veto) as caught:
        DETECTOR.after_turn(turn("Rate limit exceeded", engine_error=True), HISTORY)
    assert caught.value.guardrail == "give_up"
    assert "engine" in caught.value.reason


def test_configured_phrases_replace_the_defaults():
    """DESIGN §5: the give-up list is configurable."""
    detector = GiveUpDetector(Limits(give_up_phrases=["blocked, need a human"]))
    assert detector.find("Blocked — need a human.") == "blocked, need a human"
    assert detector.find("I give up.") is None


def test_short_custom_phrase_still_respects_negation():
    """DESIGN §5: precise phrases; "don't give up on X" is encouragement, not a give-up."""
    detector = GiveUpDetector(Limits(give_up_phrases=["give up"]))
    assert detector.find("Don't give up on X.") is None
    assert detector.find("OK, give up.") == "give up"


words = st.sampled_from(["the", "file", "is", "created", "tests", "pass", "give", "up", "on", "i", "done", "it"])


@given(st.lists(words, max_size=30))
def test_output_without_any_phrase_never_trips(ws):
    """DESIGN §5: only the listed phrases escalate."""
    output = " ".join(ws)
    if "i give up" not in output:
        assert DETECTOR.find(output) is None
