"""The supervisor's long-lived MCP server and the stdlib relay a turn's CLI starts, for real:
the SDK's own stdio client starts the relay command, and the tools answer as ``chatbox mcp``'s."""

from __future__ import annotations

import os
import time

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from chatbox.bus import wire
from chatbox.supervisor.mcp_hub import McpHub
from chatbox.supervisor.turn import server_command
from tests.fleet import child_env


def start_hub(fleet, agent: str) -> McpHub:
    fleet.ws.ensure_agent_dir(agent)
    hub = McpHub(agent, fleet.ws.agent_mcp_socket(agent), server_command(agent, fleet.ws),
                 child_env(fleet.ws), str(fleet.ws.root))
    hub.start()
    return hub


async def session_of(fleet, argv: list[str], body) -> None:
    params = StdioServerParameters(command=argv[0], args=argv[1:], cwd=str(fleet.ws.root),
                                   env=child_env(fleet.ws))
    with open(fleet.logs / "relay.log", "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(30):
                    await session.initialize()
                    await body(session)


def test_a_relay_session_has_the_tools_and_the_turn_of_its_header(fleet):
    fleet.add_agent("kimi", "#general")
    post = fleet.post("#general", "a thread to answer in")
    sup = fleet.agent_client("kimi")  # a supervisor of our own opens a real turn
    hello = sup.call(wire.Hello(agent="kimi", supervisor="test-sup"))
    claim = sup.call(wire.Claim(agent="kimi", supervisor="test-sup", epoch=hello.epoch))
    hub = start_hub(fleet, "kimi")
    try:
        assert (os.stat(hub.path).st_mode & 0o777) == 0o600

        async def body(session: ClientSession) -> None:
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"reply", "inbox", "wait", "escalate"} <= names
            res = await session.call_tool("reply", {"post_id": post.seq, "body": "via relay"})
            assert not res.is_error, res.content[0].text

        # two sessions one after the other (a CLI may start its server twice): the hub
        # outlives each; a session for another turn is refused at its first post
        anyio.run(session_of, fleet, hub.relay_command(claim.turn), body)
        anyio.run(session_of, fleet, hub.relay_command(claim.turn), body)
        replies = [m for m in fleet.read("#general") if m.author == "kimi"]
        assert [m.body for m in replies] == ["via relay", "via relay"]
        assert {(m.in_reply_to, m.turn, m.chain, m.hop) for m in replies} == {
            (post.seq, claim.turn, post.chain, 1)}

        async def stale(session: ClientSession) -> None:
            res = await session.call_tool("reply", {"post_id": post.seq, "body": "late"})
            assert res.is_error and "not in flight" in res.content[0].text

        anyio.run(session_of, fleet, hub.relay_command(claim.turn + 100), stale)
    finally:
        hub.stop()
    assert not hub.path.exists()


def test_the_hub_is_started_again_when_it_died(fleet):
    fleet.add_agent("kimi", "#general")
    hub = start_hub(fleet, "kimi")
    try:
        first = hub.proc.pid
        hub.proc.kill()
        hub.proc.wait(10)
        hub.ensure()
        assert hub.proc.pid != first and hub.proc.poll() is None

        async def body(session: ClientSession) -> None:
            assert (await session.list_tools()).tools

        anyio.run(session_of, fleet, hub.relay_command(1), body)
    finally:
        hub.stop()


def test_the_relay_says_in_one_line_when_no_hub_listens(fleet, tmp_path):
    import subprocess
    hub = McpHub("kimi", tmp_path / "none.sock", [], {}, str(tmp_path))
    started = time.monotonic()
    done = subprocess.run(hub.relay_command(5), capture_output=True, text=True, timeout=10)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "cannot reach the supervisor's MCP server" in done.stderr
    assert time.monotonic() - started < 5


def test_a_supervisor_whose_agent_socket_path_is_too_long_runs_turns_without_the_hub():
    """AF_UNIX paths end at 107 bytes: the agent's socket may not fit where the bus's does.
    The supervisor then says so and each turn starts its own `chatbox mcp` (slower, same tools)."""
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    from tests.fleet import Fleet, wait_for
    base = Path(tempfile.mkdtemp(prefix="cbx"))
    root = base / ("w" * (80 - len(str(base))))
    root.mkdir()
    name = "a" + "b" * 30
    fleet = Fleet(root=root)
    try:
        fleet.start_broker()
        assert len(str(fleet.ws.agent_mcp_socket(name))) > 107
        fleet.write_config(f'[agents.{name}]\nengine = "command"\nreply = true\n'
                           f'command = ["{sys.executable}", "-c", "print(42)"]\n')
        fleet.add_agent(name, "#general")
        sup = fleet.start_supervisor(name)
        assert "cannot bind the MCP socket" in sup.wait_log("mcp_hub_unavailable")["error"]
        fleet.post("#general", "answer please")
        wait_for(lambda: any(m.author == name and m.body == "42" for m in fleet.read("#general")),
                 timeout=30, what="the turn without the hub")
    finally:
        fleet.close()
        shutil.rmtree(base, ignore_errors=True)


def test_a_bad_relay_header_ends_its_own_session_only(fleet):
    """Any local process of the agent's user can reach the socket: a bad header (not an
    object, a non-number turn) is refused, and the server goes on serving the next relay."""
    import socket as socketlib
    fleet.add_agent("kimi", "#general")
    hub = start_hub(fleet, "kimi")
    try:
        for junk in (b"[1, 2]\n", b'{"turn": "seven"}\n', b"not json\n"):
            conn = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
            conn.connect(str(hub.path))
            conn.sendall(junk)
            conn.settimeout(30)
            assert conn.recv(1) == b""  # closed on us
            conn.close()
        assert hub.proc.poll() is None

        async def body(session: ClientSession) -> None:
            assert (await session.list_tools()).tools

        anyio.run(session_of, fleet, hub.relay_command(3), body)
    finally:
        hub.stop()
