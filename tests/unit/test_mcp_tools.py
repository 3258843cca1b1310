"""The MCP tool catalogue, argument validation and result views, in-process (DESIGN §6)."""

from __future__ import annotations

import typing

import pytest

from chatbox.bus import wire
from chatbox.mcp import views
from chatbox.mcp.tools import BY_NAME, CORE, TOOLS, ToolError, take_legacy, validate

DESIGN_TOOLS = {"hello", "chat", "start_post", "reply", "get_post", "listen", "subscribe",
                "unsubscribe", "rooms", "approve", "deny", "pin_post", "unpin_post",
                "close_post", "resolve_message", "unresolve_message", "ack", "inbox", "wait",
                "escalate", "search", "agents", "decisions"}


def test_the_catalogue_has_the_design_tools_and_no_stub_for_what_is_not_built():
    """DESIGN §6: the seed's 17 tools and ours; promote_to_whitebox is not built, so not listed."""
    assert set(BY_NAME) == DESIGN_TOOLS and len(TOOLS) == len(DESIGN_TOOLS)
    assert "promote_to_whitebox" not in BY_NAME
    assert CORE <= DESIGN_TOOLS and len(CORE) == 12


def test_every_schema_is_closed_and_every_required_field_is_declared():
    """A precise schema: required fields exist, nothing undeclared is accepted."""
    for tool in TOOLS:
        props = tool.schema["properties"]
        assert set(tool.schema.get("required", [])) <= set(props), tool.name
        assert tool.schema["additionalProperties"] is False
        for mapped in tool.fields.values():
            assert mapped in props or mapped == "agent_name", (tool.name, mapped)


def test_the_schemas_carry_the_wires_bounds_not_copies_of_them():
    """Issue 12 item 4: the tool schemas are generated from the wire's bounded types."""
    props = {t.name: t.schema["properties"] for t in TOOLS}
    assert props["chat"]["body"]["maxLength"] == wire.MAX_BODY
    assert props["start_post"]["title"]["maxLength"] == wire.MAX_TITLE
    assert props["start_post"]["tier"]["enum"] == list(typing.get_args(wire.Tier))
    assert props["listen"]["view"]["enum"] == list(typing.get_args(wire.View))
    assert props["subscribe"]["wake"]["enum"] == list(typing.get_args(wire.WakeMode))
    assert props["inbox"]["max_msgs"]["maximum"] == wire.MAX_LIMIT
    assert props["search"]["limit"]["maximum"] == wire.MAX_SEARCH
    for tool in TOOLS:
        for name, prop in tool.schema["properties"].items():
            if "channel" in name:
                assert (prop.get("items") or prop)["pattern"] == wire.CHANNEL_RE.pattern, tool.name


@pytest.mark.parametrize("channel", ["#general\n", "#General", "general", "#"])
def test_a_channel_must_match_as_a_whole_string(channel):
    """DESIGN §3: a trailing newline is no part of a name (msgspec, like re, lets $ match
    before one): the schema and the check refuse it."""
    with pytest.raises(ToolError) as info:
        validate("chat", {"channel": channel, "body": "hi"})
    assert (info.value.code, info.value.field) == ("invalid", "channel")


def test_a_valid_call_passes_unchanged():
    """validate() returns the arguments it was given when they fit the schema."""
    args = {"channels": ["#general"], "view": "digest", "timeout_ms": 0, "max_msgs": 5}
    assert validate("listen", dict(args)) == args


@pytest.mark.parametrize(("tool", "args", "code", "field", "words"), [
    ("chat", {"channel": "#general"}, "invalid", "body", "body is required"),
    ("chat", {"channel": "#general", "body": "x" * 70_000}, "too_large", "body", "70000"),
    ("chat", {"channel": "general", "body": "hi"}, "invalid", "channel", "#general"),
    ("listen", {"channels": ["#a"], "view": "all", "timeout_ms": 0}, "invalid", "view",
     "headlines, digest, full"),
    ("wait", {"timeout_ms": 60_001}, "invalid", "timeout_ms", "at most 60000"),
    ("inbox", {"max_msgs": 0}, "invalid", "max_msgs", "at least 1"),
    ("reply", {"post_id": "7", "body": "x"}, "invalid", "post_id", "integer"),
    ("rooms", {"channel": "#general"}, "invalid", "channel", "unknown argument channel"),
    ("start_post", {"channel": "#a", "title": "t" * 201, "description": "", "type": "x"},
     "too_large", "title", "over the limit of 200"),
    ("subscribe", {"channel": "#a", "wake": "often"}, "invalid", "wake", "all, mentions, none"),
])
def test_a_bad_argument_is_refused_in_one_sentence_naming_the_field(tool, args, code, field,
                                                                     words):
    """DESIGN §3: violations get a clear error naming the field, never a crash."""
    with pytest.raises(ToolError) as info:
        validate(tool, args)
    err = info.value
    assert (err.code, err.field) == (code, field)
    assert words in err.message and len(err.message) < 200
    assert str(err) == f"{code}: {err.message}"


def test_legacy_identity_arguments_are_taken_off_and_tokens_dropped():
    """DESIGN §6: agent_name, session_token and auth_token are tolerated, tokens never kept."""
    args = {"channel": "#a", "body": "b", "agent_name": "kimi", "session_token": "s",
            "auth_token": "t"}
    assert take_legacy(args) == {"agent_name": "kimi"}
    assert args == {"channel": "#a", "body": "b"}
    validate("chat", args)


def _msg(body: str, **kw) -> wire.Message:
    return wire.Message(seq=9, channel="#general", author="alice", kind="chat", body=body,
                        created_at=1_700_000_000.0, **kw)


def test_views_trim_a_message_to_headlines_digest_or_full():
    """DESIGN §3: views headlines (no body), digest (bodies cut to ~280 chars), full."""
    long = "first line here\n" + "z" * 500
    head = views.message(_msg(long), "headlines")
    assert head == {"id": 9, "seq": 9, "channel": "#general", "author": "alice", "kind": "chat",
                    "title": "first line here"}
    digest = views.message(_msg(long), "digest")
    assert digest["truncated"] and len(digest["body"]) == views.DIGEST_CHARS
    full = views.message(_msg(long, title="T", tier=2, status="pending"), "full")
    assert full["body"] == long and full["title"] == "T" and full["status"] == "pending"
    assert full["created_at"] == "2023-11-14T22:13:20Z" and "truncated" not in full


def test_scrub_removes_every_key_that_names_a_token():
    """DESIGN §7: a token never leaves the adapter."""
    created = wire.AgentCreated(name="kimi", token="cbx_secret", token_path="/x/kimi.token")
    assert views.scrub(created) == {"kind": "agent_created", "name": "kimi"}
    assert views.scrub({"a": [{"auth_token": 1, "b": 2}]}) == {"a": [{"b": 2}]}
