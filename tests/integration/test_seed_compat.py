"""The seed's clients keep working: `chatbox mcp --agent NAME` driven by the MCP SDK's stdio
client with the calls the seed documented (its legacy ``agent_name`` and ``session_token``
still passed), checking the fields its clients read — and the seed's standing channels, its
``AGENTCHAT_*`` variables and its workspaces met by the CLI. docs/MIGRATING.md lists what
still differs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import anyio
import anyio.to_thread

from chatbox import harness
from chatbox.broker.store import Store
from chatbox.bus import wire
from chatbox.bus.errors import Refused
from chatbox.mcp import views
from chatbox.runtime.workspace import Workspace
from tests.fleet import ROOT, short_tempdir
from tests.integration.test_mcp import mcp_agent

SEED_STANDING = ("#change-orders", "#debug", "#observations")
LEGACY = {"agent_name": "kimi", "session_token": "seed-session-token"}
TIMEOUT = 30


def chatbox(*args: str, cwd, **env: str) -> subprocess.CompletedProcess:
    """``python -m chatbox ARGS`` in ``cwd`` with no CHATBOX_* variable but those in ``env``."""
    return subprocess.run([sys.executable, "-m", "chatbox", *args], cwd=cwd,
                          env=harness.child_env(None, PYTHONPATH=str(ROOT), **env),
                          capture_output=True, encoding="utf-8", timeout=TIMEOUT)


# ------------------------------------------------------------------ rooms and hello

def test_rooms_keep_is_standing_and_description_and_the_seeds_standing_channels(fleet):
    """rooms(): every channel has the seed's is_standing and description beside kind and
    topic; the seed's standing channels exist in a new workspace."""
    fleet.add_agent("kimi")
    fleet.client().call(wire.CreateChannel(name="#design", topic="The new UI"))

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            return (await a.call("rooms", **LEGACY))["channels"]
    rooms = {c["name"]: c for c in anyio.run(body)}
    for name in ("#general", "#dispatch", *SEED_STANDING):
        assert rooms[name]["is_standing"] is True and rooms[name]["kind"] == "standing", name
        assert rooms[name]["description"] == rooms[name]["topic"] != "", name
    assert rooms["#design"]["is_standing"] is False
    assert rooms["#design"]["description"] == "The new UI"


def test_hello_opens_missing_default_channels_and_returns_a_null_session_token(fleet):
    """hello(name, phase, default_channels): a missing ad-hoc channel is opened and joined; a
    missing #phase-* channel would be standing, which an agent may not open: it is refused by
    name, and joined once a human opened it. session_token is there, and null."""
    fleet.add_agent("kimi")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            first = await a.call("hello", name="kimi", phase="start", **LEGACY,
                                 default_channels=["#general", "#scratch", "#phase-build"])
            await anyio.to_thread.run_sync(fleet.client().call, wire.CreateChannel(
                name="#phase-build", topic="The build phase", kind="standing"))
            again = await a.call("hello", name="kimi", phase="build", **LEGACY,
                                 default_channels=["#general", "#scratch", "#phase-build"])
            return first, again, (await a.call("rooms"))["channels"]
    first, again, rooms = anyio.run(body)
    assert "session_token" in first and first["session_token"] is None
    assert first["subscribed"] == ["#general", "#scratch"] and first["created"] == ["#scratch"]
    (refused,) = first["refused"]
    assert refused["channel"] == "#phase-build" and refused["code"] == "forbidden"
    assert "standing" in refused["message"] and "human" in refused["message"]
    assert again["subscribed"] == ["#general", "#phase-build", "#scratch"]
    assert "refused" not in again and "created" not in again
    kinds = {c["name"]: (c["kind"], c["is_standing"]) for c in rooms}
    assert kinds["#scratch"] == ("adhoc", False) and kinds["#phase-build"] == ("standing", True)


def test_only_a_human_opens_a_standing_channel(fleet):
    """The broker's rule: an agent may open ad-hoc and private channels, never a standing one."""
    fleet.add_agent("kimi")
    try:
        fleet.agent_client("kimi").call(wire.CreateChannel(name="#phase-a", kind="standing"))
    except Refused as exc:
        assert (exc.code, exc.field) == ("forbidden", "kind")
    else:
        raise AssertionError("an agent opened a standing channel")
    made = fleet.client().call(wire.CreateChannel(name="#phase-a", kind="standing")).channel
    assert made.kind == "standing" and made.created_by == fleet.human


# ------------------------------------------------------------------ listen and ack

def test_listen_reads_after_the_later_of_since_id_and_the_ack(fleet):
    """The seed read after max(since_id, ack): since_id 0 never returns what was acked."""
    fleet.add_agent("kimi", "#general")
    _, two, three = (fleet.post("#general", f"m{i}") for i in range(3))

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            await a.call("listen", channels=["#general"], view="full", timeout_ms=0, **LEGACY)
            await a.call("ack", channel="#general", up_to_id=two.seq, **LEGACY)
            zero = await a.call("listen", channels=["#general"], view="full", since_id=0,
                                timeout_ms=0, **LEGACY)
            later = await a.call("listen", channels=["#general"], view="full",
                                 since_id=three.seq, timeout_ms=0, **LEGACY)
            return zero, later
    zero, later = anyio.run(body)
    assert [m["id"] for m in zero["messages"]] == [three.seq]
    assert later["messages"] == [] and later["next_since_id"] == three.seq


def test_listen_returns_ten_messages_unless_max_msgs_says_otherwise(fleet):
    """The seed's max_msgs default of 10, declared in the schema."""
    fleet.add_agent("kimi", "#general")
    seqs = [fleet.post("#general", f"m{i}").seq for i in range(12)]

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            tools = {t.name: t for t in (await a.session.list_tools()).tools}
            res = await a.call("listen", channels=["#general"], view="headlines",
                               timeout_ms=0, **LEGACY)
            return tools["listen"].input_schema, res
    schema, res = anyio.run(body)
    assert schema["properties"]["max_msgs"]["default"] == 10
    assert [m["id"] for m in res["messages"]] == seqs[:10] and res["more"] is True
    assert res["next_since_id"] == seqs[9]


def test_ack_up_to_zero_changes_nothing_and_answers_the_offset(fleet):
    """ack(channel, 0) is accepted: a no-op that answers the current last_read_id."""
    fleet.add_agent("kimi", "#general")
    one = fleet.post("#general", "one")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            before = await a.call("ack", channel="#general", up_to_id=0, **LEGACY)
            await a.call("inbox")
            await a.call("ack", channel="#general", up_to_id=one.seq)
            after = await a.call("ack", channel="#general", up_to_id=0, **LEGACY)
            elsewhere = await a.refuse("ack", channel="#dispatch", up_to_id=0)
            nowhere = await a.refuse("ack", channel="#nowhere", up_to_id=0)
            return before, after, elsewhere, nowhere
    before, after, elsewhere, nowhere = anyio.run(body)
    assert before == {"status": "ok", "channel": "#general", "last_read_id": 0}
    assert after["last_read_id"] == one.seq
    assert (elsewhere["code"], elsewhere["field"]) == ("forbidden", "channel")
    assert (nowhere["code"], nowhere["field"]) == ("not_found", "channel")
    assert fleet.agent("kimi").offsets["#general"] == one.seq


# ------------------------------------------------------------------ threads and flags

def test_get_post_keeps_description_ts_msg_type_and_closed_resolution(fleet):
    """get_post: the seed's description, ts, msg_type and closed_resolution beside ours."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            post = await a.call("start_post", channel="#general", title="Plan",
                                description="What we do next", type="proposal", **LEGACY)
            await a.call("reply", post_id=post["post_id"], body="me too", **LEGACY)
            opened = await a.call("get_post", post_id=post["post_id"], **LEGACY)
            await a.call("close_post", post_id=post["post_id"], resolution="agreed", **LEGACY)
            closed = await a.call("get_post", post_id=post["post_id"], **LEGACY)
            return opened, closed
    opened, closed = anyio.run(body)
    p = opened["post"]
    assert p["description"] == p["body"] == "What we do next"
    assert p["msg_type"] == "proposal" and p["closed_resolution"] is None
    assert isinstance(p["ts"], float) and views.iso(p["ts"]) == p["created_at"]
    (reply,) = opened["replies"]
    assert reply["msg_type"] is None and reply["ts"] >= p["ts"]
    assert closed["post"]["closed_resolution"] == "agreed"
    assert closed["post"]["status"] == "closed"


def test_resolve_message_answers_resolved(fleet):
    """resolve_message / unresolve_message: the seed's resolved beside message_status."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            m = await a.call("chat", channel="#general", body="fixed it", **LEGACY)
            done = await a.call("resolve_message", message_id=m["message_id"], **LEGACY)
            undone = await a.call("unresolve_message", message_id=m["message_id"], **LEGACY)
            return done, undone
    done, undone = anyio.run(body)
    assert done["resolved"] is True and done["message_status"] == "resolved"
    assert undone["resolved"] is False and undone["message_status"] == "open"


# ------------------------------------------------------------------ workspaces and variables

def test_a_workspace_made_without_the_seeds_standing_channels_gets_them_at_broker_start(
        bare_fleet):
    """Standing channels are made at every broker start, so an older workspace gets them."""
    store = Store(bare_fleet.ws.db_path)
    with store.write():
        for name in SEED_STANDING:
            store.db.execute("DELETE FROM subscriptions WHERE channel = ?", (name,))
            store.db.execute("DELETE FROM offsets WHERE channel = ?", (name,))
            store.db.execute("DELETE FROM channels WHERE name = ?", (name,))
    store.close()
    bare_fleet.start_broker()
    rooms = {c.name: c.kind for c in bare_fleet.client().call(wire.Rooms()).channels}
    assert all(rooms.get(name) == "standing" for name in SEED_STANDING), rooms


def test_the_seeds_variables_are_each_named_on_stderr(fleet):
    """AGENTCHAT_WORKSPACE is honoured; any other AGENTCHAT_* gets one line saying what
    replaces it, or that nothing does — never silently ignored."""
    proc = chatbox("read", "#general", cwd=fleet.root,
                   AGENTCHAT_WORKSPACE=str(fleet.root), AGENTCHAT_TOKEN="seed-token",
                   AGENTCHAT_PORT="8765")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("chatbox: AGENTCHAT_PORT is the seed's")
    assert "nothing in ChatBox replaces it" in lines[0]
    assert lines[1].startswith("chatbox: AGENTCHAT_TOKEN is the seed's")
    assert "CHATBOX_TOKEN" in lines[1]


def test_a_seed_workspace_is_named_with_the_way_in():
    """A directory with .agentchat/ and no .chatbox/: one line that says it is the seed's and
    to run `chatbox init` — from the CLI and from `chatbox mcp` — and init then works."""
    root = short_tempdir()
    try:
        (root / ".agentchat").mkdir()
        (root / "src").mkdir()
        for argv, cwd, env in ((["read", "#general"], root / "src", {}),
                               (["mcp", "--agent", "kimi"], root,
                                {"AGENTCHAT_WORKSPACE": str(root)})):
            proc = chatbox(*argv, cwd=cwd, **env)
            assert proc.returncode == 1, proc.stderr
            (line,) = proc.stderr.splitlines()
            assert "workspace of the seed" in line and "chatbox init" in line, line
            assert "token" not in line, line
        init = chatbox("init", "--human", "carol", cwd=root)
        assert init.returncode == 0, init.stderr
        assert Workspace(root).is_initialised() and (root / ".agentchat").is_dir()
    finally:
        shutil.rmtree(root, ignore_errors=True)
