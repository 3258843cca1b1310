"""Give-up: an agent that says it has given up, or an engine that reports an error result,
is escalated to a human (DESIGN §5).

The phrase list (``Limits.give_up_phrases``) is short and precise, and matching errs towards
silence, because a false alarm pauses a working agent:

* Text and phrases are compared as whole words after :func:`normalise`, with contractions
  made canonical first (``I'm`` is ``i am``, ``can't`` is ``cannot``, ``n't`` is ``not``).
* Quoted or code text is a mention, not a statement: double-quoted spans, backtick spans,
  fenced blocks and ``>`` quote lines are skipped.
* A sentence ending in ``?`` is a question ("should I give up?"), not a statement.
* A phrase is ignored when a negation or a verb of saying stands in the three words before it
  in its clause ("never say I give up", "I would not say I'm giving up"), or when it is only
  supposed: a condition opens an earlier clause of its sentence or stands before it in its own
  ("if the build fails again, I give up", "before I give up, ...") or directly follows it
  ("I give up if ...").
* Not caught: a give-up worded differently from every phrase (add the phrase). Still caught:
  giving up on one approach ("I give up on the regex, using a parser") reads as giving up.
"""

from __future__ import annotations

import re

from chatbox.guardrails.base import Guardrail
from chatbox.guardrails.facts import AgentHistory, TurnFacts
from chatbox.guardrails.limits import Limits
from chatbox.guardrails.text import excerpt, normalise

_QUOTED = re.compile(
    r"```.*?(?:```|\Z)|`[^`\n]*`|\"[^\"\n]{0,400}\"|“[^”\n]{0,400}”|«[^»\n]{0,400}»|^[ \t]*>.*$",
    re.DOTALL | re.MULTILINE,
)
_SENTENCE = re.compile(r"[^.!?;:\n]+[.!?;:\n]*")
_CLAUSE_BREAK = re.compile(r"[,()\[\]—–]|\s-\s")
_CONTRACTIONS = (
    (re.compile(r"\bcan[’']t\b|\bcan not\b"), "cannot"),
    (re.compile(r"\bwon[’']t\b"), "will not"),
    (re.compile(r"n[’']t\b"), " not"),
    (re.compile(r"\bi[’']m\b"), "i am"),
)
_LOOKBACK = 3
_NEGATIONS = frozenset({"not", "never", "cannot", "nobody", "neither", "nor", "without", "hardly"})
_SAYING = frozenset({
    "say", "says", "said", "saying", "write", "writes", "wrote", "writing", "type", "typed",
    "print", "prints", "printed", "echo", "echoes", "echoed", "reply", "replied", "respond",
    "responded", "phrase", "message",
})
_CONDITIONS = frozenset({"if", "unless", "whether", "until", "before", "otherwise"})


def _words(text: str) -> list[str]:
    text = text.casefold()
    for pattern, replacement in _CONTRACTIONS:
        text = pattern.sub(replacement, text)
    return normalise(text).split()


def _clauses(sentence: str) -> tuple[list[str], list[int]]:
    """The sentence's words, and for each word the index of the clause (comma part) it is in."""
    words: list[str] = []
    clause_of: list[int] = []
    for n, part in enumerate(_CLAUSE_BREAK.split(sentence)):
        part_words = _words(part)
        words += part_words
        clause_of += [n] * len(part_words)
    return words, clause_of


def _occurrences(words: list[str], phrase: list[str]):
    n = len(phrase)
    for i in range(len(words) - n + 1):
        if words[i:i + n] == phrase:
            yield i


def _is_statement(words: list[str], clause_of: list[int], start: int, end: int) -> bool:
    """Whether the phrase at ``words[start:end]`` is stated, not negated, reported or supposed."""
    clause = clause_of[start]
    before = [w for k, w in enumerate(words[:start]) if clause_of[k] == clause][-_LOOKBACK:]
    if any(w in _NEGATIONS or w in _SAYING for w in before):
        return False
    for k in range(start):  # "if ..., I give up" or "before I give up"
        opens_clause = k == 0 or clause_of[k - 1] != clause_of[k]
        if words[k] in _CONDITIONS and (opens_clause or clause_of[k] == clause):
            return False
    after = words[end] if end < len(words) and clause_of[end] == clause else None
    return after not in _CONDITIONS


class GiveUpDetector(Guardrail):
    """Escalates a turn whose output gives up, or whose engine reported an error result."""

    name = "give_up"

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self._phrases: list[tuple[str, list[str]]] = []
        for phrase in limits.give_up_phrases:  # "i'm giving up" and "i am giving up" are one phrase
            words = _words(phrase)
            if words and all(words != known for _, known in self._phrases):
                self._phrases.append((phrase, words))

    def search(self, output: str) -> tuple[str, str] | None:
        """The first give-up phrase stated in ``output`` and the sentence stating it, or None."""
        text = _QUOTED.sub(" ", output)
        for match in _SENTENCE.finditer(text):
            sentence = match.group()
            if "?" in sentence:
                continue
            words, clause_of = _clauses(sentence)
            for phrase, target in self._phrases:
                for start in _occurrences(words, target):
                    if _is_statement(words, clause_of, start, start + len(target)):
                        return phrase, sentence
        return None

    def find(self, output: str) -> str | None:
        """The give-up phrase (as configured) stated in ``output``, or None."""
        found = self.search(output)
        return None if found is None else found[0]

    def after_turn(self, turn: TurnFacts, history: AgentHistory) -> None:
        """Veto when the engine reported an error result or the output gives up."""
        if turn.engine_error:
            cause = f": {turn.cause}" if turn.cause else ""
            raise self.veto(
                f"The engine reported an error result for turn {turn.turn_id} of agent "
                f"{turn.agent}{cause}",
                [f"outcome {turn.outcome}, exit code {turn.exit_code}", excerpt(turn.output)],
            )
        found = self.search(turn.output)
        if found is None:
            return
        phrase, sentence = found
        raise self.veto(
            f"Agent {turn.agent} gave up in turn {turn.turn_id} (it said \"{phrase}\").",
            [f"phrase: {phrase}", f"sentence: {excerpt(sentence)}"],
        )
