"""The MCP adapter's tools against a real broker process (the ``fleet`` fixture), through the
real bus client: reading, paging, and the mapping of the broker's refusals to tool errors."""

from __future__ import annotations

import pytest

from chatbox.bus import wire
from chatbox.mcp.adapter import Adapter
from chatbox.mcp.tools import ToolError


@pytest.fixture
def kimi(fleet):
    """An adapter bound to agent kimi (subscribed to #general), connected to the fleet's broker."""
    fleet.add_agent("kimi", "#general")
    adapter = Adapter("kimi", fleet.ws.read_token(fleet.ws.agent_token_path("kimi")),
                      fleet.ws.endpoints())
    adapter.start()
    yield adapter
    adapter.close()


def test_listen_skips_my_own_messages_and_pages_past_them(fleet, kimi):
    """listen returns others' messages; a page full of my own does not hide the next ones."""
    for i in range(5):
        kimi.call("chat", {"channel": "#general", "body": f"mine {i}"})
    theirs = fleet.post("#general", "theirs")
    res = kimi.call("listen", {"channels": ["#general"], "view": "full", "timeout_ms": 0,
                               "max_msgs": 2})
    assert [m["id"] for m in res["messages"]] == [theirs.seq]
    assert res["more"] is False and res["next_since_id"] == theirs.seq


def test_listen_never_advances_next_since_id_past_an_unreturned_message(fleet, kimi):
    """next_since_id is safe to pass back: nothing is skipped when max_msgs cuts the batch."""
    kimi.call("subscribe", {"channel": "#dispatch"})
    seqs = [fleet.post("#general" if i % 2 else "#dispatch", f"m{i}").seq for i in range(6)]
    res = kimi.call("listen", {"channels": ["#general", "#dispatch"], "view": "headlines",
                               "timeout_ms": 0, "max_msgs": 3})
    assert [m["id"] for m in res["messages"]] == seqs[:3] and res["more"] is True
    rest = kimi.call("listen", {"channels": ["#general", "#dispatch"], "view": "headlines",
                                "timeout_ms": 0, "since_id": res["next_since_id"]})
    assert [m["id"] for m in rest["messages"]] == seqs[3:] and rest["more"] is False


def test_listen_starts_after_the_acked_offset_when_since_id_is_absent(fleet, kimi):
    """DESIGN §3: offsets are durable; listen without since_id reads what I have not acked."""
    first = fleet.post("#general", "one")
    second = fleet.post("#general", "two")
    kimi.call("inbox", {})
    assert kimi.call("ack", {"channel": "#general", "up_to_id": first.seq})[
        "last_read_id"] == first.seq
    res = kimi.call("listen", {"channels": ["#general"], "view": "full", "timeout_ms": 0})
    assert [m["id"] for m in res["messages"]] == [second.seq]


def test_a_broker_refusal_keeps_its_code_and_names_the_tools_argument(fleet, kimi):
    """Refusals map Refused.code/.message and rename the broker's field to the tool's."""
    with pytest.raises(ToolError) as info:
        kimi.call("ack", {"channel": "#general", "up_to_id": 99})
    assert (info.value.code, info.value.field) == ("invalid", "up_to_id")
    with pytest.raises(ToolError) as info:
        kimi.call("get_post", {"post_id": 12345})
    assert (info.value.code, info.value.field) == ("not_found", "post_id")


def test_hello_reports_refused_channels_beside_the_subscribed_ones(fleet, kimi):
    """hello subscribes what it may and says which channels it could not join and why."""
    fleet.client().call(wire.CreateChannel(name="#inner", topic="x", kind="private"))
    res = kimi.call("hello", {"name": "kimi", "phase": "start",
                              "default_channels": ["#general", "#inner", "#dispatch"]})
    assert res["subscribed"] == ["#dispatch", "#general"]
    assert res["refused"][0]["channel"] == "#inner" and res["refused"][0]["code"] == "not_found"


def test_a_revoked_token_is_answered_unauthorized(fleet, kimi):
    """DESIGN §7: revocation takes effect at once, also for a running adapter."""
    kimi.call("rooms", {})
    fleet.client().call(wire.Revoke(name="kimi"))
    with pytest.raises(ToolError) as info:
        kimi.call("rooms", {})
    assert info.value.code == "unauthorized"
