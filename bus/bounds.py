"""The bounds of what the wire carries (DESIGN §3), declared once, as msgspec ``Meta``.

The wire's request types use these annotated types, so decoding a request checks them; the MCP
tool schemas are generated from the same types (``msgspec.json.schema``), and the broker and the
clients test names against the same compiled patterns. Nothing else declares a bound.

A pattern must match a *whole* string. msgspec (like ``re.match``) lets ``$`` match before a
trailing newline, so every pattern ends in ``(?!\\n)$``: ``"bob\\n"`` is not a name. The
lookahead reads the same in ECMA-262 regexes, so the generated JSON Schema means the same thing.

:func:`explain` turns a ``msgspec.ValidationError`` into one sentence naming the field, from the
schema of the type that refused the value.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, NamedTuple

import msgspec
from msgspec import Meta

from chatbox.bus.codes import ErrorCode

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}(?!\n)$"
CHANNEL_PATTERN = r"^#[a-z0-9][a-z0-9_.-]{0,63}(?!\n)$"
TYPE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}(?!\n)$"
NAME_RE = re.compile(NAME_PATTERN)
CHANNEL_RE = re.compile(CHANNEL_PATTERN)
TYPE_RE = re.compile(TYPE_PATTERN)

MAX_BODY = 64 * 1024   # bytes of UTF-8; a schema counts characters, the broker also the bytes
MAX_TITLE = 200        # characters
MAX_TOPIC = 200        # characters
MAX_RESOLUTION = 2000  # characters
MAX_LIMIT = 1000       # messages in one page of history or inbox
MAX_SEARCH = 200       # results of one search or decisions list

NAME_RULE = "use 1-64 of a-z 0-9 _ . - starting with a letter or digit"
CHANNEL_RULE = "a channel is # followed by 1-64 of a-z 0-9 _ . - (e.g. #general)"
TYPE_RULE = "a lowercase word of up to 32 characters"

# ids (seqs, turns, epochs) are SQLite integers: 0 .. 2**63 - 1
MAX_ID = 2**63 - 1
# one line of text: no control character at all (a title, a topic, a reason, an id)
LINE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
# text of several lines: no control character but newline and tab
TEXT_PATTERN = r"^[^\x00-\x08\x0b-\x1f\x7f]*$"
# the largest frame the broker accepts (ZMQ_MAXMSGSIZE): well above the largest legal request
# (a turn report: output, excerpt and reply, each bounded), far below what would hurt; a peer
# that sends more is disconnected by ZeroMQ before anything is allocated or decoded
MAX_FRAME = 1024 * 1024
# replies queued for one peer that does not read them; past it they are dropped, so a client
# that never reads cannot grow the broker's memory (a client has one request in flight, a
# windowed one 16)
MAX_QUEUED_REPLIES = 64
MAX_LINE = 200          # characters of a reason, a supervisor id, a host name, a nonce
LINE_RULE = "one line of text, without control characters"
TEXT_RULE = "text without control characters (newlines and tabs allowed)"

Id = Annotated[int, Meta(ge=0, le=MAX_ID, description="a seq, turn or epoch (0 to 2**63 - 1)")]
Line = Annotated[str, Meta(max_length=MAX_LINE, pattern=LINE_PATTERN, description=LINE_RULE)]
Name = Annotated[str, Meta(pattern=NAME_PATTERN, description=NAME_RULE)]
ChannelName = Annotated[str, Meta(pattern=CHANNEL_PATTERN, description=CHANNEL_RULE)]
PostType = Annotated[str, Meta(pattern=TYPE_PATTERN, description=TYPE_RULE)]
Body = Annotated[str, Meta(max_length=MAX_BODY)]
Title = Annotated[str, Meta(max_length=MAX_TITLE, pattern=LINE_PATTERN, description=LINE_RULE)]
Topic = Annotated[str, Meta(max_length=MAX_TOPIC, pattern=LINE_PATTERN, description=LINE_RULE)]
Resolution = Annotated[str, Meta(max_length=MAX_RESOLUTION, pattern=TEXT_PATTERN,
                                 description=TEXT_RULE)]
Tier = Literal[0, 1, 2]
Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT)]
SearchLimit = Annotated[int, Meta(ge=1, le=MAX_SEARCH)]


def is_name(value: object) -> bool:
    """Is ``value`` a principal's name (the whole string)?"""
    return isinstance(value, str) and NAME_RE.match(value) is not None


def is_channel(value: object) -> bool:
    """Is ``value`` a channel's name, ``#`` included (the whole string)?"""
    return isinstance(value, str) and CHANNEL_RE.match(value) is not None


# --------------------------------------------------------------------------- explaining

class Violation(NamedTuple):
    """Why a value was refused: ``bound`` when it broke a declared bound (a pattern, a length, a
    range, a closed set), not when the frame has the wrong shape (a type, a missing field)."""

    code: ErrorCode
    message: str
    path: tuple[str | int, ...]
    bound: bool

    @property
    def field(self) -> str | None:
        return ".".join(str(p) for p in self.path) or None


_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]")
_NAMED = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<name>[^`]+)`")
_JSON_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool,
               "array": list, "object": dict, "null": type(None)}


def explain(exc: msgspec.ValidationError, value: Any, schema: dict,
            defs: dict | None = None) -> Violation:
    """The violation behind ``exc``, raised decoding ``value`` (plain data) as a type whose JSON
    Schema is ``schema``; ``defs`` resolves ``$ref``. Never echoes a long value."""
    text = str(exc)
    at = _AT.search(text)
    path: list[str | int] = []
    for name, index in _STEP.findall(at.group("path") if at else ""):
        path.append(name if name else int(index))
    named = _NAMED.match(text)
    if named:
        name = named.group("name")
        if named.group("what") == "missing required":
            return Violation("invalid", f"{name} is required", (*path, name), False)
        return Violation("invalid", f"unknown argument {name}", (*path, name), False)
    fragment = _resolve(schema, defs)
    for step in path:
        if isinstance(value, dict) and isinstance(step, str):
            value = value.get(step)
            fragment = _resolve(fragment.get("properties", {}).get(step, {}), defs)
        elif isinstance(value, list) and isinstance(step, int) and step < len(value):
            value = value[step]
            fragment = _resolve(fragment.get("items", {}), defs)
        else:
            break
    return _against(fragment, value, ".".join(str(p) for p in path) or "arguments", tuple(path),
                    text)


def _resolve(fragment: dict, defs: dict | None) -> dict:
    if "$ref" in fragment and defs:
        fragment = defs.get(fragment["$ref"].rpartition("/")[2], {})
    for key in ("anyOf", "oneOf"):  # an optional value: the branch that is not null
        branches = [b for b in fragment.get(key, ()) if b.get("type") != "null"]
        if len(branches) == 1:
            fragment = {**{k: v for k, v in fragment.items() if k != key},
                        **_resolve(branches[0], defs)}
    return fragment


def _against(f: dict, value: Any, where: str, path: tuple, text: str) -> Violation:
    """Which of the fragment's constraints ``value`` breaks, said as one sentence."""
    kind = f.get("type")
    wanted = _JSON_TYPES.get(kind) if isinstance(kind, str) else None
    if wanted is not None and (not isinstance(value, wanted) or isinstance(value, bool)
                               and kind != "boolean"):
        return Violation("invalid", f"{where} must be of type {kind}", path, False)
    if "enum" in f and value not in f["enum"]:
        options = ", ".join(str(v) for v in f["enum"])
        return Violation("invalid", f"{where} must be one of {options}", path, True)
    if isinstance(value, str):
        if "maxLength" in f and len(value) > f["maxLength"]:
            return Violation("too_large", f"{where} is {len(value)} characters, over the limit "
                             f"of {f['maxLength']}", path, True)
        if "minLength" in f and len(value) < f["minLength"]:
            return Violation("invalid", f"{where} is empty" if f["minLength"] == 1 else
                             f"{where} is under {f['minLength']} characters", path, True)
        if "pattern" in f and not re.search(f["pattern"], value):
            shown = value if len(value) <= 80 else value[:80] + "…"
            rule = f.get("description", f"matching {f['pattern']}")
            return Violation("invalid", f"{where} {shown!r} is invalid: {rule}", path, True)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        for key, side, broken in (("minimum", "at least", value < f.get("minimum", value)),
                                  ("maximum", "at most", value > f.get("maximum", value))):
            if broken:
                return Violation("invalid", f"{where} must be {side} {f[key]}, got {value}",
                                 path, True)
    if isinstance(value, list):
        if "maxItems" in f and len(value) > f["maxItems"]:
            return Violation("invalid", f"{where} must have at most {f['maxItems']} items",
                             path, True)
        if "minItems" in f and len(value) < f["minItems"]:
            return Violation("invalid", f"{where} must have at least {f['minItems']} items",
                             path, True)
    return Violation("invalid", f"{where}: {text[:200]}", path, False)
