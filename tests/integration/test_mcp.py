"""`chatbox mcp --agent NAME` driven by the MCP SDK's own stdio client against a real broker.

Every tool of DESIGN §6 is exercised end to end, with the refusals §7 asks for. Each test runs its
async body with ``anyio.run`` inside a plain pytest function; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import anyio.to_thread
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from chatbox.bus import wire
from chatbox.mcp.tools import CORE
from tests.fleet import child_env, wait_for

CALL_TIMEOUT = 70.0  # above the 60 s cap of listen/wait
ALL_TOOLS = {"hello", "chat", "start_post", "reply", "get_post", "listen", "subscribe",
             "unsubscribe", "rooms", "approve", "deny", "pin_post", "unpin_post", "close_post",
             "resolve_message", "unresolve_message", "ack", "inbox", "wait", "escalate",
             "search", "agents", "decisions"}


def server_argv(agent: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "chatbox.mcp.server", "--agent", agent, *extra]


class Agent:
    """One MCP session: ``call`` expects success, ``refuse`` expects a tool error."""

    def __init__(self, session: ClientSession, log_path):
        self.session = session
        self.log_path = log_path
        self.texts: list[str] = []

    async def raw(self, tool: str, args: dict):
        with anyio.fail_after(CALL_TIMEOUT):
            res = await self.session.call_tool(tool, args)
        self.texts.extend(c.text for c in res.content if c.type == "text")
        self.texts.append(json.dumps(res.structured_content))
        return res

    async def call(self, tool: str, **args) -> dict:
        res = await self.raw(tool, args)
        assert not res.is_error, f"{tool} failed: {res.content[0].text}"
        assert res.structured_content["status"] == "ok"
        assert json.loads(res.content[0].text) == res.structured_content
        return res.structured_content

    async def refuse(self, tool: str, **args) -> dict:
        res = await self.raw(tool, args)
        assert res.is_error, f"{tool} should have failed: {res.content[0].text}"
        err = res.structured_content
        assert res.content[0].text == f"{err['code']}: {err['message']}"
        return err

    async def wait_log(self, event: str, count: int = 1) -> None:
        def seen() -> bool:
            lines = self.log_path.read_text(encoding="utf-8").splitlines()
            return sum(f'"event": "{event}"' in line for line in lines) >= count
        await anyio.to_thread.run_sync(lambda: wait_for(seen, 10, what=f"mcp log {event}"))


@contextlib.asynccontextmanager
async def mcp_agent(fleet, agent: str, *extra: str, via_cli: bool = False,
                    **env: str) -> AsyncIterator[Agent]:
    argv = server_argv(agent, "--log-level", "debug", *extra)
    if via_cli:  # the way hosts start it: `chatbox --workspace DIR mcp --agent NAME ...`
        argv = [sys.executable, "-m", "chatbox", "--workspace", str(fleet.ws.root), "mcp",
                *argv[3:]]
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(fleet.ws.root),
                                   env=child_env(fleet.ws, **env))
    log_path = fleet.logs / f"mcp-{agent}.log"
    with open(log_path, "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(30):
                    await session.initialize()
                yield Agent(session, log_path)


def run(fn, *args) -> None:
    anyio.run(fn, *args)


# ------------------------------------------------------------------ tools/list

def test_tools_list_declares_required_fields_enums_and_bounds(fleet):
    """DESIGN §6: every tool has a precise schema; identity is never an argument."""
    fleet.add_agent("kimi")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            tools = {t.name: t for t in (await a.session.list_tools()).tools}
        assert set(tools) == ALL_TOOLS
        required = {"hello": ["name", "phase", "default_channels"], "chat": ["channel", "body"],
                    "start_post": ["channel", "title", "description", "type"],
                    "reply": ["post_id", "body"], "listen": ["channels", "view", "timeout_ms"],
                    "ack": ["channel", "up_to_id"], "wait": ["timeout_ms"],
                    "deny": ["post_id", "reason"], "escalate": ["reason"],
                    "close_post": ["post_id", "resolution"], "search": ["query"]}
        for name, fields in required.items():
            assert tools[name].input_schema["required"] == fields, name
        for t in tools.values():
            schema = t.input_schema
            assert schema["type"] == "object" and schema["additionalProperties"] is False
            assert t.description and "\n" not in t.description
            assert not {"agent_name", "session_token", "auth_token", "token"} & set(
                schema["properties"]), t.name
        props = {n: t.input_schema["properties"] for n, t in tools.items()}
        assert props["listen"]["view"]["enum"] == ["headlines", "digest", "full"]
        assert props["subscribe"]["wake"]["enum"] == ["all", "mentions", "none"]
        assert props["chat"]["body"]["maxLength"] == 65536
        assert props["start_post"]["title"]["maxLength"] == 200
        assert props["start_post"]["tier"]["enum"] == [0, 1, 2]
        assert (props["wait"]["timeout_ms"]["minimum"],
                props["wait"]["timeout_ms"]["maximum"]) == (0, 60000)
        assert props["inbox"]["max_msgs"]["maximum"] == 1000
        assert tools["listen"].annotations.read_only_hint is True
    run(body)


def test_tools_list_stays_well_under_five_thousand_tokens(fleet):
    """docs/MCP.md: tools/list is measured (bytes/4 ≈ tokens); core is a strict subset."""
    fleet.add_agent("kimi")

    async def size(*extra: str) -> tuple[set[str], int]:
        async with mcp_agent(fleet, "kimi", *extra) as a:
            listed = await a.session.list_tools()
        tools = [t.model_dump(by_alias=True, exclude_none=True) for t in listed.tools]
        return {t["name"] for t in tools}, len(json.dumps(tools, separators=(",", ":")))

    async def body():
        names_all, bytes_all = await size("--tools", "all")
        names_core, bytes_core = await size("--tools", "core")
        assert names_all == ALL_TOOLS and names_core == CORE
        assert bytes_all / 4 < 3000 and bytes_core < bytes_all
        print(f"tools/list all: {bytes_all} bytes, core: {bytes_core} bytes")
    run(body)


def test_a_tool_outside_the_core_set_is_not_offered(fleet):
    """`chatbox mcp --tools core` serves only the twelve core tools."""
    fleet.add_agent("kimi")

    async def body():
        async with mcp_agent(fleet, "kimi", "--tools", "core", via_cli=True) as a:
            assert {t.name for t in (await a.session.list_tools()).tools} == CORE
            err = await a.refuse("pin_post", post_id=1)
            assert err["code"] == "not_found"
            await a.call("rooms")
    run(body)


# ------------------------------------------------------------------ identity

def test_hello_subscribes_to_default_channels_and_returns_the_identity(fleet):
    """DESIGN §6: hello binds nothing new; it reports who the adapter is and subscribes."""
    fleet.add_agent("kimi", "#general")
    fleet.client().call(wire.CreateChannel(name="#secret", topic="members", kind="private"))
    fleet.post("#general", "welcome")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            res = await a.call("hello", name="kimi", phase="start",
                               default_channels=["#general", "#dispatch", "#secret"])
            assert res["agent"] == "kimi" and res["role"] == "agent"
            assert res["subscribed"] == ["#dispatch", "#general"]
            assert res["unread"]["#general"] == 1
            assert [r["channel"] for r in res["refused"]] == ["#secret"]
            err = await a.refuse("hello", name="bob", phase="start", default_channels=[])
            assert err["code"] == "forbidden" and err["field"] == "name"
    run(body)
    subs = [s.channel for s in fleet.agent("kimi").subscriptions]
    assert subs == ["#dispatch", "#general"]


def test_a_mismatching_legacy_agent_name_is_refused_and_tokens_are_ignored(fleet):
    """DESIGN §6: seed calls may carry agent_name and tokens; only our own name passes."""
    fleet.add_agent("kimi")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("chat", channel="#general", body="hi", agent_name="bob")
            assert err["code"] == "forbidden" and err["field"] == "agent_name"
            res = await a.call("chat", channel="#general", body="hi", agent_name="kimi",
                               session_token="cbx_forged", auth_token="whatever")
            assert res["message_id"] > 0
    run(body)
    assert [(m.author, m.body) for m in fleet.read("#general")] == [("kimi", "hi")]


def test_a_token_of_another_agent_stops_the_server_at_start(fleet):
    """Identity is bound at start: a token that is not the agent's is refused before serving."""
    fleet.add_agent("kimi")
    fleet.add_agent("bob")
    bob_token = fleet.ws.read_token(fleet.ws.agent_token_path("bob"))
    proc = subprocess.run(server_argv("kimi"), env=child_env(fleet.ws, CHATBOX_TOKEN=bob_token),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          encoding="utf-8", timeout=30)
    assert proc.returncode == 1
    assert "belongs to bob" in proc.stderr and bob_token not in proc.stderr
    assert proc.stdout == ""


def test_no_result_carries_the_token(fleet):
    """DESIGN §7: a token never leaves the adapter, not even in results about agents."""
    fleet.add_agent("kimi", "#general")
    token = fleet.ws.read_token(fleet.ws.agent_token_path("kimi"))
    fleet.post("#general", "hello")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            await a.call("hello", name="kimi", phase="start", default_channels=["#general"])
            await a.call("agents")
            await a.call("rooms")
            await a.call("inbox")
            await a.call("chat", channel="#general", body="hi")
            await a.refuse("chat", channel="#nope", body="hi", session_token=token)
            return a.texts
    texts = anyio.run(body)
    assert texts and not any(token in t for t in texts)
    assert token not in (fleet.logs / "mcp-kimi.log").read_text(encoding="utf-8")


def test_stdout_carries_only_protocol_frames(fleet):
    """STYLE: the MCP process never writes to stdout except protocol frames."""
    fleet.add_agent("kimi")
    frames = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                  "protocolVersion": "2025-06-18", "capabilities": {},
                  "clientInfo": {"name": "t", "version": "0"}}},
              {"jsonrpc": "2.0", "method": "notifications/initialized"},
              {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
              {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "rooms", "arguments": {}}}]
    stdin = "".join(json.dumps(f) + "\n" for f in frames)
    proc = subprocess.Popen(server_argv("kimi"), env=child_env(fleet.ws), text=True,
                            encoding="utf-8", stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(stdin)
    proc.stdin.flush()
    lines: list[dict] = []
    while len(lines) < 3:  # three answers; then closing stdin ends the server
        line = proc.stdout.readline()
        assert line, f"server ended early: {proc.stderr.read()}"
        lines.append(json.loads(line))
    rest, err = proc.communicate(timeout=30)  # closes stdin: the server ends
    assert [json.loads(x) for x in rest.splitlines()] == []
    assert [m["id"] for m in lines] == [1, 2, 3]
    assert '"event": "ready"' in err


# ------------------------------------------------------------------ posting and threads

def test_chat_start_post_reply_and_get_post_make_a_thread(fleet):
    """DESIGN §6 with the seed's result names: message_id, post_id, reply_id."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            chat = await a.call("chat", channel="#general", body="hello @alice")
            post = await a.call("start_post", channel="#general", title="Plan",
                                description="step one", type="proposal", tier=1)
            reply = await a.call("reply", post_id=post["post_id"], body="step two")
            thread = await a.call("get_post", post_id=post["post_id"])
            return chat, post, reply, thread
    chat, post, reply, thread = anyio.run(body)
    assert chat["message_id"] < post["post_id"] < reply["reply_id"]
    assert reply["post_id"] == post["post_id"]
    assert thread["post"]["title"] == "Plan" and thread["post"]["body"] == "step one"
    assert thread["post"]["type"] == "proposal" and thread["post"]["tier"] == 1
    assert [r["body"] for r in thread["replies"]] == ["step two"]
    assert thread["replies"][0]["author"] == "kimi"
    stored = fleet.read("#general")
    assert [(m.kind, m.author) for m in stored] == [("chat", "kimi"), ("post", "kimi"),
                                                    ("reply", "kimi")]
    assert stored[0].mentions == ["alice"]


def test_reply_to_a_reply_is_refused(fleet):
    """DESIGN §3: threads are one level deep."""
    fleet.add_agent("kimi", "#general")
    post = fleet.post("#general", "topic", kind="post", title="T")
    first = fleet.client().call(wire.Post(body="r1", in_reply_to=post.seq)).message

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("reply", post_id=first.seq, body="r2")
            assert err["code"] == "invalid" and err["field"] == "post_id"
            assert f"reply to #{post.seq}" in err["message"]
    run(body)


def test_an_oversize_body_is_refused_naming_the_field(fleet):
    """DESIGN §3: a body is at most 64 KiB; the error names the field and never echoes it."""
    fleet.add_agent("kimi")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("chat", channel="#general", body="x" * 70_000)
            assert err["code"] == "too_large" and err["field"] == "body"
            assert len(err["message"]) < 200
            err = await a.refuse("chat", channel="#general", body="é" * 40_000)  # 80 kB UTF-8
            assert err["code"] == "too_large" and err["field"] == "body"
            err = await a.refuse("listen", channels=["#general"], view="everything",
                                 timeout_ms=0)
            assert err["code"] == "invalid" and err["field"] == "view"
            err = await a.refuse("wait", timeout_ms=600_000)
            assert err["field"] == "timeout_ms"
    run(body)
    assert fleet.read("#general") == []


def test_posts_inside_a_turn_carry_the_turn_and_the_next_hop(fleet):
    """DESIGN §5: with CHATBOX_TURN_ID set, every post continues the trigger's chain at hop + 1."""
    fleet.add_agent("kimi", "#general")
    trigger = fleet.post("#general", "please look")
    sup = fleet.agent_client("kimi")
    hello = sup.call(wire.Hello(agent="kimi", supervisor="test-sup"))
    claim = sup.call(wire.Claim(agent="kimi", supervisor="test-sup", epoch=hello.epoch))
    assert claim.turn is not None

    async def body():
        async with mcp_agent(fleet, "kimi", CHATBOX_TURN_ID=str(claim.turn)) as a:
            chat = await a.call("chat", channel="#general", body="looking")
            reply = await a.call("reply", post_id=trigger.seq, body="done")
            return chat, reply
    chat, reply = anyio.run(body)
    assert (chat["chain"], chat["hop"]) == (trigger.chain, 1)
    assert (reply["chain"], reply["hop"]) == (trigger.chain, 1)
    assert {m.turn for m in fleet.read("#general")[1:]} == {claim.turn}


def test_a_post_from_a_turn_not_in_flight_is_refused(fleet):
    """DESIGN §4.5: anything a finished or lost turn still sends is refused."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi", CHATBOX_TURN_ID="999") as a:
            err = await a.refuse("chat", channel="#general", body="late")
            assert err["code"] == "conflict" and "turn 999" in err["message"]
    run(body)


# ------------------------------------------------------------------ reading

def test_listen_returns_others_messages_in_the_requested_view(fleet):
    """DESIGN §6: headlines = who and what, digest = bodies cut to ~280 chars, full = all."""
    fleet.add_agent("kimi", "#general")
    long_body = "first line\n" + "y" * 1000
    fleet.post("#general", long_body)
    fleet.post("#general", "topic body", kind="post", title="A title")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            await a.call("chat", channel="#general", body="my own")
            heads = await a.call("listen", channels=["#general"], view="headlines",
                                 timeout_ms=0)
            digest = await a.call("listen", channels=["#general"], view="digest", timeout_ms=0)
            full = await a.call("listen", channels=["#general"], view="full", timeout_ms=0,
                                max_msgs=1)
            since = await a.call("listen", channels=["#general"], view="full", timeout_ms=0,
                                 since_id=full["next_since_id"])
            return heads, digest, full, since
    heads, digest, full, since = anyio.run(body)
    assert [m["title"] for m in heads["messages"]] == ["first line", "A title"]
    assert all("body" not in m for m in heads["messages"])
    assert {m["author"] for m in heads["messages"]} == {"alice"}
    first = digest["messages"][0]
    assert first["truncated"] and len(first["body"]) <= 280
    assert full["messages"][0]["body"] == long_body and full["more"] is True
    assert [m["title"] for m in since["messages"]] == ["A title"] and since["more"] is False
    assert since["next_since_id"] == fleet.read("#general")[-1].seq


def test_listen_blocks_until_a_message_arrives(fleet):
    """DESIGN §6: with nothing to read, listen waits on channel events, bounded by timeout_ms."""
    fleet.add_agent("kimi", "#general")
    got: dict = {}

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            async def listen():
                got.update(await a.call("listen", channels=["#general"], view="full",
                                        timeout_ms=30_000))
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                await a.wait_log("waiting")
                await anyio.to_thread.run_sync(fleet.post, "#general", "now")
    run(body)
    assert [m["body"] for m in got["messages"]] == ["now"] and got["timed_out"] is False


def test_listen_times_out_empty_when_nothing_arrives(fleet):
    """A bounded wait: an empty answer with timed_out after timeout_ms."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            res = await a.call("listen", channels=["#general"], view="digest", timeout_ms=200)
            assert res["messages"] == [] and res["timed_out"] is True
    run(body)


def test_listen_on_an_unsubscribed_channel_is_refused(fleet):
    """DESIGN §7: listen covers only channels the agent is subscribed to."""
    fleet.add_agent("kimi", "#general")
    fleet.post("#dispatch", "not for kimi's eyes")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("listen", channels=["#general", "#dispatch"], view="full",
                                 timeout_ms=0)
            assert err["code"] == "forbidden" and err["field"] == "channels"
            assert "#dispatch" in err["message"]
    run(body)


def test_inbox_and_ack_move_the_durable_offset(fleet):
    """DESIGN §3: offsets are durable; ack answers last_read_id and empties the inbox."""
    fleet.add_agent("kimi", "#general", "#dispatch")
    one = fleet.post("#general", "one")
    two = fleet.post("#dispatch", "two")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            inbox = await a.call("inbox", max_msgs=10)
            assert [m["id"] for m in inbox["messages"]] == [one.seq, two.seq]
            assert inbox["ack_up_to"] == {"#general": one.seq, "#dispatch": two.seq}
            ack = await a.call("ack", channel="#general", up_to_id=one.seq)
            assert ack == {"status": "ok", "channel": "#general", "last_read_id": one.seq}
            rooms = {c["name"]: c for c in (await a.call("rooms"))["channels"]}
            assert rooms["#general"]["unread"] == 0 and rooms["#dispatch"]["unread"] == 1
            left = await a.call("inbox")
            assert [m["id"] for m in left["messages"]] == [two.seq]
    run(body)
    assert fleet.agent("kimi").offsets["#general"] == one.seq


def test_ack_past_what_was_delivered_is_refused(fleet):
    """DESIGN §3: an ack only up to a seq that was delivered to that agent."""
    fleet.add_agent("kimi", "#general")
    one = fleet.post("#general", "one")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("ack", channel="#general", up_to_id=one.seq)
            assert err["code"] == "invalid" and err["field"] == "up_to_id"
            await a.call("listen", channels=["#general"], view="headlines", timeout_ms=0)
            two = await anyio.to_thread.run_sync(fleet.post, "#general", "two")
            err = await a.refuse("ack", channel="#general", up_to_id=two.seq)
            assert "not delivered" in err["message"]
            assert (await a.call("ack", channel="#general", up_to_id=one.seq))[
                "last_read_id"] == one.seq
    run(body)


def test_wait_returns_when_a_message_for_me_arrives(fleet):
    """DESIGN §6: wait blocks until something unacked arrives for me, bounded."""
    fleet.add_agent("kimi", "#general")
    got: dict = {}

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            async def wait():
                got.update(await a.call("wait", timeout_ms=30_000))
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await a.wait_log("waiting")
                await a.call("chat", channel="#general", body="my own does not count")
                await anyio.to_thread.run_sync(fleet.post, "#general", "for you")
            quiet = await a.call("wait", timeout_ms=0)
            return quiet
    quiet = anyio.run(body)
    assert [m["body"] for m in got["messages"]] == ["for you"] and got["timed_out"] is False
    assert [m["body"] for m in quiet["messages"]] == ["for you"]  # still unacked


def test_wait_times_out_when_nothing_arrives(fleet):
    """A bounded wait answers timed_out with no messages."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            res = await a.call("wait", timeout_ms=150)
            assert res["messages"] == [] and res["timed_out"] is True
    run(body)


def test_subscribe_unsubscribe_and_rooms(fleet):
    """subscribe keeps what it is not told to change; rooms shows channels with unread."""
    fleet.add_agent("kimi", "#general")
    fleet.post("#dispatch", "before")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            sub = await a.call("subscribe", channel="#dispatch", view="digest", wake="mentions")
            assert (sub["view"], sub["wake"]) == ("digest", "mentions")
            sub = await a.call("subscribe", channel="#dispatch", view="headlines")
            assert (sub["view"], sub["wake"]) == ("headlines", "mentions")
            rooms = {c["name"]: c for c in (await a.call("rooms"))["channels"]}
            assert rooms["#dispatch"]["subscribed"] and rooms["#dispatch"]["view"] == "headlines"
            assert not rooms["#alerts"]["subscribed"]
            await a.call("unsubscribe", channel="#dispatch")
            err = await a.refuse("unsubscribe", channel="#dispatch")
            assert err["code"] == "not_found"
            err = await a.refuse("subscribe", channel="#general", wake="sometimes")
            assert err["field"] == "wake"
    run(body)
    assert [s.channel for s in fleet.agent("kimi").subscriptions] == ["#general"]


def test_search_finds_messages_in_subscribed_channels_only(fleet):
    """DESIGN §7: search covers what the agent may read."""
    fleet.add_agent("kimi", "#general")
    fleet.post("#general", "the zebra crossing")
    fleet.post("#dispatch", "another zebra")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            res = await a.call("search", query="zebra", limit=10)
            assert [m["channel"] for m in res["messages"]] == ["#general"]
            err = await a.refuse("search", query="zebra", channel="#dispatch")
            assert err["code"] == "forbidden"
    run(body)


def test_agents_lists_the_roster_with_state(fleet):
    """DESIGN §6: agents() is the roster with each agent's FSM state."""
    fleet.add_agent("kimi", "#general")
    fleet.add_agent("bob", "#dispatch")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            return (await a.call("agents"))["agents"]
    roster = {r["name"]: r for r in anyio.run(body)}
    assert set(roster) == {"kimi", "bob"}
    assert roster["bob"]["state"] in ("ASLEEP", "WAKING", "BUSY")
    assert roster["bob"]["channels"] == ["#dispatch"]


# ------------------------------------------------------------------ flags, decisions, escalation

def test_pin_close_and_resolve_work_on_own_messages(fleet):
    """DESIGN §7: pin, close and resolve are the author's own."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            post = await a.call("start_post", channel="#general", title="Q", description="?",
                                type="question")
            pid = post["post_id"]
            assert (await a.call("pin_post", post_id=pid))["pinned"] is True
            assert (await a.call("unpin_post", post_id=pid))["pinned"] is False
            chat = await a.call("chat", channel="#general", body="a point")
            res = await a.call("resolve_message", message_id=chat["message_id"])
            assert res["message_status"] == "resolved"
            res = await a.call("unresolve_message", message_id=chat["message_id"])
            assert res["message_status"] == "open"
            res = await a.call("close_post", post_id=pid, resolution="answered")
            assert (res["post_status"], res["resolution"]) == ("closed", "answered")
    run(body)


def test_pinning_someone_elses_post_is_refused(fleet):
    """DESIGN §7: an agent may pin, close or resolve only its own posts."""
    fleet.add_agent("kimi", "#general")
    post = fleet.post("#general", "human's", kind="post", title="Mine")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            for tool, args in (("pin_post", {"post_id": post.seq}),
                               ("close_post", {"post_id": post.seq, "resolution": "no"}),
                               ("resolve_message", {"message_id": post.seq})):
                err = await a.refuse(tool, **args)
                assert err["code"] == "forbidden", tool
            assert err["field"] == "message_id"
    run(body)
    assert not fleet.read("#general")[0].pinned


def test_approve_and_deny_by_an_agent_are_refused(fleet):
    """DESIGN §5: only a human or admin may decide a tier-2 post, never an agent."""
    fleet.add_agent("kimi", "#general")
    fleet.add_agent("bob", "#general")

    async def body():
        async with mcp_agent(fleet, "bob") as b:
            post = await b.call("start_post", channel="#general", title="Deploy?",
                                description="to prod", type="proposal", tier=2)
            assert post["post_status"] == "pending"
        async with mcp_agent(fleet, "kimi") as a:
            err = await a.refuse("approve", post_id=post["post_id"], comment="fine by me")
            assert err["code"] == "forbidden" and "human" in err["message"]
            err = await a.refuse("deny", post_id=post["post_id"], reason="no")
            assert err["code"] == "forbidden"
    run(body)


def test_decisions_lists_a_humans_decision(fleet):
    """DESIGN §5: a decision is a durable record in the thread, listed by decisions()."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            post = await a.call("start_post", channel="#general", title="Merge?",
                                description="branch x", type="proposal", tier=2)
            await anyio.to_thread.run_sync(lambda: fleet.client().call(
                wire.Decide(seq=post["post_id"], approve=True, reason="go")))
            res = await a.call("decisions", limit=5)
            thread = await a.call("get_post", post_id=post["post_id"])
            return post, res, thread
    post, res, thread = anyio.run(body)
    assert [m["in_reply_to"] for m in res["messages"]] == [post["post_id"]]
    assert res["messages"][0]["kind"] == "decision" and "go" in res["messages"][0]["body"]
    assert thread["post"]["status"] == "approved"


def test_escalate_asks_a_human_in_alerts(fleet):
    """DESIGN §5: an escalation is a tier-2 post in #alerts naming the agent and the reason."""
    fleet.add_agent("kimi", "#general")
    about = fleet.post("#general", "conflicting orders")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            return await a.call("escalate", reason="two humans disagree", post_id=about.seq)
    res = anyio.run(body)
    assert res["channel"] == "#alerts"
    alert = fleet.read("#alerts")[-1]
    assert alert.seq == res["message_id"] and alert.author == "kimi" and alert.tier == 2
    assert "two humans disagree" in alert.body and alert.chain == about.chain


# ------------------------------------------------------------------ broker down and back

def test_the_adapter_survives_a_broker_restart(fleet):
    """The bus reconnects by itself: tools answer unavailable while the broker is down."""
    fleet.add_agent("kimi", "#general")

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            await a.call("chat", channel="#general", body="before")
            await anyio.to_thread.run_sync(fleet.stop_broker)
            err = await a.refuse("chat", channel="#general", body="while down")
            assert err == {"status": "error", "code": "unavailable",
                           "message": "broker not reachable, retrying"}
            await anyio.to_thread.run_sync(fleet.start_broker)
            res = await retry_until_available(a, "chat", channel="#general", body="after")
            assert res["message_id"] > 0
            got = await a.call("listen", channels=["#general"], view="headlines",
                               timeout_ms=0)
            assert got["messages"] == []
    run(body)
    assert [m.body for m in fleet.read("#general")] == ["before", "after"]


def test_the_adapter_starts_while_the_broker_is_down(fleet):
    """Start anyway, answer unavailable, verify the identity once the broker is back."""
    fleet.add_agent("kimi", "#general")
    fleet.stop_broker()

    async def body():
        async with mcp_agent(fleet, "kimi") as a:
            assert len((await a.session.list_tools()).tools) == len(ALL_TOOLS)
            err = await a.refuse("rooms")
            assert err["code"] == "unavailable"
            await anyio.to_thread.run_sync(fleet.start_broker)
            res = await retry_until_available(a, "hello", name="kimi", phase="start",
                                              default_channels=[])
            assert res["role"] == "agent" and res["subscribed"] == ["#general"]
    run(body)


async def retry_until_available(a: Agent, tool: str, attempts: int = 5, **args) -> dict:
    """A bounded retry: the first call after a restart may still see the old connection."""
    for _ in range(attempts):
        res = await a.raw(tool, args)
        if not res.is_error:
            return res.structured_content
        assert res.structured_content["code"] == "unavailable", res.content[0].text
    raise AssertionError(f"{tool} still unavailable after {attempts} attempts")
