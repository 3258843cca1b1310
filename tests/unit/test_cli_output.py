"""Terminal safety and the printed shapes of the CLI (DESIGN §6)."""

from __future__ import annotations

import json
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from chatbox.bus import wire
from chatbox.cli.output import (AGENT_FIELDS, MESSAGE_FIELDS, agent_obj, json_line, message_line,
                                message_obj, safe_block, safe_line)


def msg(**kw) -> wire.Message:
    base = dict(seq=12, channel="#general", author="alice", kind="chat", body="hello")
    return wire.Message(**(base | kw))


def _terminal_safe(text: str) -> bool:
    return all(c == "\t" or unicodedata.category(c) not in ("Cc", "Cs", "Zl", "Zp")
               for c in text)


@given(st.text())
def test_a_safe_line_never_carries_a_control_character(text):
    """DESIGN §6: untrusted text is made safe for the terminal, newlines included."""
    assert _terminal_safe(safe_line(text))


@given(st.text())
def test_a_safe_block_keeps_only_its_own_newlines_each_followed_by_the_indent(text):
    """DESIGN §6: newlines stay, continuation lines are indented so they cannot pose as messages."""
    out = safe_block(text, "    ")
    for line in out.split("\n")[1:]:
        assert line.startswith("    ")
    assert _terminal_safe(out.replace("\n", ""))


def test_an_ansi_clear_screen_is_shown_not_obeyed():
    """DESIGN §6: a body holding ESC[2J must not clear the screen."""
    line = message_line(msg(body="x\x1b[2J\x1b]0;title\x07y"))
    assert "\x1b" not in line and "\x07" not in line
    assert line == "#12 #general alice: x\\x1b[2J\\x1b]0;title\\x07y"


def test_bidi_overrides_are_escaped():
    """Trojan Source (CVE-2021-42574): reordering characters are shown as escapes."""
    assert safe_line("a\u202eb\u2066c") == "a\\u202eb\\u2066c"


def test_a_reply_is_indented_and_names_its_parent():
    """The brief's shape: `↳ #13 (re #12)`."""
    line = message_line(msg(seq=13, kind="reply", in_reply_to=12, body="one\ntwo"))
    assert line == "  ↳ #13 (re #12) #general alice: one\n        two"


def test_a_post_shows_its_title_type_and_tier_then_its_body():
    """Posts carry a title and `[tier N]` marks; the body follows, indented."""
    line = message_line(msg(kind="post", title="Deploy", type="proposal", tier=2,
                            status="pending", body="may I?"))
    assert line == "#12 #general alice: Deploy [post:proposal] [tier 2] [pending]\n    may I?"


def test_message_json_has_exactly_the_documented_fields_even_when_defaulted():
    """DESIGN §6: a message is seq, channel, author, kind, title, body, … created_at."""
    obj = json.loads(json_line(message_obj(msg())))
    assert list(obj) == list(MESSAGE_FIELDS)
    assert obj["title"] is None and obj["tier"] == 0 and obj["pinned"] is False


def test_agent_json_has_exactly_the_documented_fields_with_full_subscriptions():
    """DESIGN §6: an agent is name, state, paused, engine, subscriptions, offsets, last_turn."""
    agent = wire.AgentInfo(name="kimi", state="ASLEEP", subscriptions=[
        wire.Subscription(channel="#general", view="full", wake="all")])
    obj = json.loads(json_line(agent_obj(agent)))
    assert list(obj) == list(AGENT_FIELDS)
    assert obj["subscriptions"] == [{"channel": "#general", "view": "full", "wake": "all",
                                     "last_read": 0}]


def test_the_roster_line_and_details_show_a_turns_usage_and_cause():
    """Issue 11: usage is shown by `agent list`/`status`, cause and usage by `agent show`."""
    from chatbox.cli.output import agent_details, agent_line
    turn = wire.TurnInfo(id=7, agent="kim", epoch=3, outcome="failed", input_tokens=240,
                         output_tokens=24, cost_usd=0.0014, cause="Not logged in · Please run /login")
    agent = wire.AgentInfo(name="kim", state="ASLEEP", engine="claude", last_turn=turn)
    assert agent_line(agent).endswith("last turn 7 failed (264 tokens, $0.0014)")
    details = agent_details(agent)
    assert "  cause: Not logged in · Please run /login" in details
    assert "  usage: 240 in / 24 out tokens, $0.0014" in details
