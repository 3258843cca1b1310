"""What the CLI prints: terminal-safe text, one line per message, and one JSON object per line.

Everything a message carries (bodies, titles, names) is untrusted: a body holding ``\\x1b[2J``
must not clear the operator's screen, a ``\\r`` must not overwrite the line before it, and a
bidi override must not reorder what the reader sees. So control and format characters are shown
as visible escapes (``\\x1b``), never passed through. Newlines in bodies are kept, and every
continuation line is indented so that it cannot pose as a message of its own.
"""

from __future__ import annotations

import datetime as _dt
import unicodedata
from typing import Any

import msgspec

from chatbox.bus import wire

MESSAGE_FIELDS = ("seq", "channel", "author", "kind", "title", "body", "in_reply_to", "chain",
                  "hop", "tier", "status", "pinned", "turn", "created_at")
AGENT_FIELDS = ("name", "state", "paused", "engine", "subscriptions", "offsets", "last_turn")

INDENT = "    "
REPLY_MARK = "  ↳ "

# Unicode format characters that reorder or hide text (Trojan Source, CVE-2021-42574), and the
# line and paragraph separators some terminals honour as newlines.
_DECEPTIVE = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                       "\u2028\u2029\ufeff")

_json = msgspec.json.Encoder()


# --------------------------------------------------------------------------- safe text

def _escape_char(c: str) -> str:
    code = ord(c)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(c: str) -> bool:
    if c in _DECEPTIVE:
        return True
    if c == "\t":
        return False
    return unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")


def safe_line(text: str | None) -> str:
    """``text`` as one terminal-safe line: every control character (newlines too) escaped."""
    if not text:
        return ""
    return "".join(_escape_char(c) if _unsafe(c) else c for c in text)


def safe_block(text: str | None, indent: str = INDENT) -> str:
    """Multi-line untrusted text: lines kept, each made safe, continuation lines indented."""
    if not text:
        return ""
    lines = text.replace("\r\n", "\n").split("\n")
    return ("\n" + indent).join(safe_line(line) for line in lines)


# --------------------------------------------------------------------------- human lines

def _marks(msg: wire.Message) -> str:
    marks = []
    if msg.kind not in ("chat", "reply"):
        marks.append(msg.kind if msg.type is None else f"{msg.kind}:{safe_line(msg.type)}")
    elif msg.type is not None:
        marks.append(safe_line(msg.type))
    if msg.tier:
        marks.append(f"tier {msg.tier}")
    if msg.status != "open":
        marks.append(safe_line(msg.status))
    if msg.pinned:
        marks.append("pinned")
    return "".join(f" [{m}]" for m in marks)


def message_line(msg: wire.Message) -> str:
    """``#12 #general alice: hello``; a reply indented as ``↳ #13 (re #12) …``; posts titled."""
    indent = INDENT
    if msg.in_reply_to is not None:
        head = f"{REPLY_MARK}#{msg.seq} (re #{msg.in_reply_to})"
        indent = " " * len(REPLY_MARK) + INDENT
    else:
        head = f"#{msg.seq}"
    who = f"{head} {safe_line(msg.channel)} {safe_line(msg.author)}"
    if msg.title is not None:
        line = f"{who}: {safe_line(msg.title)}{_marks(msg)}"
        if msg.body:
            line += "\n" + indent + safe_block(msg.body, indent)
        if msg.resolution:
            line += f"\n{indent}resolution: {safe_block(msg.resolution, indent)}"
        return line
    marks = _marks(msg)
    return f"{who}:{marks} {safe_block(msg.body, indent)}".rstrip()


def channel_line(ch: wire.ChannelInfo) -> str:
    star = "*" if ch.subscribed else " "
    kind = "" if ch.kind in ("standing", "adhoc") else f" [{ch.kind}]"
    unread = f"{ch.unread} unread" if ch.unread else "0 unread"
    return (f"{star} {safe_line(ch.name):<20} {unread:>10}  last #{ch.last_seq}{kind}  "
            f"{safe_line(ch.topic)}").rstrip()


def _subs(agent: wire.AgentInfo) -> str:
    return " ".join(f"{safe_line(s.channel)}({s.wake})" for s in agent.subscriptions) or "-"


def _turn(turn: wire.TurnInfo | None) -> str:
    if turn is None:
        return "no turns yet"
    outcome = turn.outcome or "running"
    used = turn.input_tokens + turn.output_tokens
    usage = f" ({used} tokens{f', ${turn.cost_usd:.4f}' if turn.cost_usd else ''})" if used else ""
    return f"last turn {turn.id} {safe_line(outcome)}{usage}"


def agent_line(agent: wire.AgentInfo) -> str:
    state = "REVOKED" if agent.revoked else agent.state
    paused = " paused" if agent.paused else ""
    engine = safe_line(agent.engine) or "-"
    return (f"{safe_line(agent.name):<16} {state:<7}{paused:<7} engine={engine}"
            f"  {_subs(agent)}  {_turn(agent.last_turn)}")


def agent_details(agent: wire.AgentInfo) -> str:
    rows = [
        ("agent", safe_line(agent.name)),
        ("state", f"{agent.state} (epoch {agent.epoch})" + (" revoked" if agent.revoked else "")),
        ("paused", f"yes: {safe_line(agent.paused_reason)}" if agent.paused else "no"),
        ("engine", safe_line(agent.engine) or "-"),
        ("supervisor", safe_line(agent.supervisor) or "-"),
        ("current turn", str(agent.current_turn) if agent.current_turn is not None else "-"),
    ]
    lines = [f"{k + ':':<14}{v}" for k, v in rows]
    lines.append("subscriptions:" + ("" if agent.subscriptions else " -"))
    for s in agent.subscriptions:
        seen = agent.offsets.get(s.channel, s.last_read)
        lines.append(f"  {safe_line(s.channel):<20} wake={s.wake} view={s.view} acked #{seen}")
    turn = agent.last_turn
    if turn is None:
        lines.append("last turn:    -")
    else:
        ended = when(turn.ended_at) if turn.ended_at else "running"
        lines.append(f"last turn:    {turn.id} {safe_line(turn.outcome or 'running')} "
                     f"(exit {turn.exit_code if turn.exit_code is not None else '-'}, {ended}) "
                     f"handled {' '.join(f'#{s}' for s in turn.batch) or '-'}")
        if turn.cause:
            lines.append(f"  cause: {safe_line(turn.cause)}")
        if turn.input_tokens or turn.output_tokens or turn.cost_usd is not None:
            cost = f", ${turn.cost_usd:.4f}" if turn.cost_usd is not None else ""
            lines.append(f"  usage: {turn.input_tokens} in / {turn.output_tokens} out tokens{cost}")
        if turn.excerpt:
            lines.append(f"  {safe_block(turn.excerpt, '  ')}")
    return "\n".join(lines)


def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return _dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --------------------------------------------------------------------------- JSON lines

def plain(value: Any) -> Any:
    """A Struct as builtins with every field present (the wire omits defaults; JSON must not)."""
    if isinstance(value, msgspec.Struct):
        return {f: plain(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def message_obj(msg: wire.Message) -> dict[str, Any]:
    return {f: getattr(msg, f) for f in MESSAGE_FIELDS}


def agent_obj(agent: wire.AgentInfo) -> dict[str, Any]:
    return {f: plain(getattr(agent, f)) for f in AGENT_FIELDS}


def json_line(obj: Any) -> str:
    return _json.encode(obj).decode("utf-8")
