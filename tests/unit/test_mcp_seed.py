"""What the seed's clients read, in-process: the seed's field names in the MCP views, the seed's
defaults in the tool schemas, its ``AGENTCHAT_*`` variables and its workspaces."""

from __future__ import annotations

import msgspec
import pytest

from chatbox.bus import wire
from chatbox.mcp import views
from chatbox.mcp.tools import BY_NAME, validate
from chatbox.runtime import env
from chatbox.runtime.workspace import Workspace, WorkspaceError

POST = wire.Message(seq=7, channel="#general", author="kimi", kind="post", body="the plan",
                    title="Plan", type="proposal", created_at=1_700_000_000.0)


def test_a_channel_carries_is_standing_description_and_last_activity_beside_ours():
    for kind in ("standing", "adhoc", "private"):
        shown = views.channel(wire.ChannelInfo(name="#a", topic="About a", kind=kind,
                                               last_activity=1_700_000_000.5))
        assert shown["is_standing"] is (kind == "standing") and shown["kind"] == kind
        assert shown["description"] == shown["topic"] == "About a"
        assert shown["last_activity"] == 1_700_000_000.5


def test_a_thread_carries_the_seeds_columns_with_the_seeds_values():
    """The seed's ts is its REAL column (seconds since the epoch); its msg_type and
    description are null on a reply; resolved is there on every message."""
    root = views.in_thread(POST, root=True)
    assert (root["description"], root["msg_type"], root["closed_resolution"],
            root["resolved"]) == ("the plan", "proposal", None, False)
    assert root["ts"] == 1_700_000_000.0 and root["created_at"] == "2023-11-14T22:13:20Z"
    closed = msgspec.structs.replace(POST, status="closed", resolution="done")
    assert views.in_thread(closed, root=True)["closed_resolution"] == "done"
    resolved = msgspec.structs.replace(POST, status="resolved", resolution="x")
    assert views.in_thread(resolved, root=True)["closed_resolution"] is None
    assert views.in_thread(resolved, root=True)["resolved"] is True
    reply = views.in_thread(wire.Message(seq=8, channel="#general", author="bob", kind="reply",
                                         body="ok", in_reply_to=7, created_at=1_700_000_001.5))
    assert (reply["msg_type"], reply["description"], reply["closed_resolution"],
            reply["ts"]) == (None, None, None, 1_700_000_001.5)


def test_the_schemas_declare_the_seeds_defaults_and_accept_an_ack_up_to_zero():
    props = {t: BY_NAME[t].schema["properties"] for t in ("listen", "inbox", "ack")}
    assert props["listen"]["max_msgs"]["default"] == 10
    assert props["inbox"]["max_msgs"]["default"] == 50
    assert props["ack"]["up_to_id"]["minimum"] == 0
    assert validate("ack", {"channel": "#general", "up_to_id": 0})


def test_only_a_standing_channel_may_be_asked_for_on_the_wire_beside_the_others():
    req = wire.CreateChannel(name="#phase-a", kind="standing")
    assert wire.request_decoder.decode(wire.encode(req)) == req


@pytest.mark.parametrize(("environ", "said"), [
    ({"AGENTCHAT_WORKSPACE": "/w"}, []),
    ({"AGENTCHAT_WORKSPACE": "/w", "CHATBOX_WORKSPACE": "/w"}, []),
    ({"AGENTCHAT_WORKSPACE": "/seed", "CHATBOX_WORKSPACE": "/w"}, ["CHATBOX_WORKSPACE"]),
    ({"AGENTCHAT_LOG_LEVEL": "debug"}, ["ChatBox reads CHATBOX_LOG_LEVEL"]),
    ({"AGENTCHAT_DB": "x.db"}, ["nothing in ChatBox replaces it"]),
    ({"AGENTCHAT_AUTH_TOKEN": "s3cret"}, ["every principal has its own token"]),
    ({"AGENTCHAT_HTTP_PORT": "8765", "AGENTCHAT_HTTP_HOST": "0.0.0.0"},
     ["`chatbox serve --host ADDR`", "`chatbox serve --port N`"]),
    ({"AGENTCHAT_MCP_STDIO": "1"}, ["`chatbox mcp --agent NAME`"]),
    ({"AGENTCHAT_CORS_ORIGINS": "*"}, ["`chatbox serve --allow-host NAME`"]),
    ({"PATH": "/bin", "AGENTCHAT": "x"}, []),
])
def test_every_seed_variable_but_the_workspace_is_named(environ, said):
    notices = env.seed_notices(environ)
    assert len(notices) == len(said)
    for line, words in zip(notices, said):
        assert "seed's" in line and words in line and "\n" not in line
        assert "s3cret" not in line  # a variable is named, its value never shown


def test_a_seed_workspace_is_refused_by_name_and_upward_with_the_way_in(tmp_path, monkeypatch):
    (tmp_path / ".agentchat").mkdir()
    (tmp_path / "sub").mkdir()
    monkeypatch.delenv(env.WORKSPACE, raising=False)
    monkeypatch.delenv(env.WORKSPACE_ALIAS, raising=False)
    monkeypatch.chdir(tmp_path / "sub")
    for explicit in (str(tmp_path), None):
        with pytest.raises(WorkspaceError) as info:
            Workspace.find(explicit)
        assert "seed" in str(info.value) and "chatbox init" in str(info.value)
    (tmp_path / ".chatbox").mkdir()  # once ChatBox lives beside it, it is ChatBox's
    assert Workspace.find(None).root == tmp_path.resolve()

