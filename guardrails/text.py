"""Text normalisation shared by the guardrails that read an agent's output.

Two outputs that differ only in case, spacing, punctuation, hex ids, timestamps or uuids
normalise to the same string. Plain numbers are kept: they are what tells ``"ack 12 13"`` (the
stub handled messages 12 and 13) from ``"ack 14 15"`` — different work, not a repetition.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_TIMESTAMP = re.compile(
    r"\b[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[t ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:z|[+-][0-9]{2}:?[0-9]{2})?)?\b"
    r"|\b[0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?\b"
)
# An id: 0x-prefixed hex, or a token of 7+ hex digits mixing letters and digits (a1b2c3d,
# 550e8400). Pure-letter words ("deadbeef") and plain numbers (42) are kept.
_HEX_ID = re.compile(r"\b(?:0x[0-9a-f]+|(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,})\b")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    """Casefold, drop uuids, timestamps and hex ids, turn punctuation into spaces, collapse
    whitespace. Idempotent: ``normalise(normalise(t)) == normalise(t)``."""
    text = text.casefold()
    text = _UUID.sub(" ", text)
    text = _TIMESTAMP.sub(" ", text)
    text = _HEX_ID.sub(" ", text)
    text = _PUNCTUATION.sub(" ", text)
    return " ".join(text.split())


def excerpt(text: str, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, for evidence shown to a human."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
