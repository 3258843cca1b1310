"""Live updates over HTTP: ``/v1/events`` (SSE, resumable, only what the caller may read),
agent states on it, ``/metrics`` derived from a real turn, and MCP over Streamable HTTP."""

from __future__ import annotations

import json
import queue
import socket
import threading

import anyio
import httpx
import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from chatbox.bus import wire
from tests.fleet import wait_for

TIMEOUT = 10.0


class Stream:
    """An SSE connection read by a thread: ``next()`` is the next event, bounded.

    A raw socket speaking HTTP/1.0 (the body then ends with the connection, unchunked), so that
    ``close`` really shuts the connection down and the server sees its client go."""

    def __init__(self, client: httpx.Client, headers: dict | None = None):
        self._events: queue.Queue = queue.Queue()
        self._held: list[dict] = []
        self.live = threading.Event()
        url = client.base_url
        self._sock = socket.create_connection((url.host, url.port), timeout=TIMEOUT)
        head = {"Host": f"{url.host}:{url.port}", **client.headers, **(headers or {})}
        lines = [f"GET /v1/events HTTP/1.0"] + [f"{k}: {v}" for k, v in head.items()
                                                 if k.lower() in ("host", "authorization",
                                                                  "last-event-id")]
        self._sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._file = self._sock.makefile("rb")
        status = self._file.readline().decode()
        self.headers: dict[str, str] = {}
        while (line := self._file.readline().decode().strip()):
            key, _, value = line.partition(":")
            self.headers[key.lower()] = value.strip()
        assert " 200 " in status, status
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self.live.wait(TIMEOUT), "the stream never said it was live"

    def _read(self) -> None:
        event: dict = {}
        try:
            self._sock.settimeout(None)
            for raw in self._file:
                line = raw.decode().rstrip("\n")
                if line.startswith(": live"):
                    self.live.set()
                elif not line:
                    if "event" in event:
                        self._events.put(event)
                    event = {}
                elif ":" in line:
                    key, _, value = line.partition(":")
                    event[key] = value.strip()
        except OSError:
            pass
        self._events.put(None)

    def next(self, kind: str = "message") -> dict:
        """The next event of ``kind``; events of other kinds are kept for their own ``next``."""
        for ev in self._held:
            if ev["event"] == kind:
                self._held.remove(ev)
                return {"id": int(ev["id"]), "data": json.loads(ev["data"])}
        while True:
            ev = self._events.get(timeout=TIMEOUT)
            assert ev is not None, "the stream ended"
            if ev["event"] == kind:
                return {"id": int(ev["id"]), "data": json.loads(ev["data"])}
            self._held.append(ev)

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        self._file.close()
        self._sock.close()


def test_events_carry_only_what_the_caller_may_read_and_resume_by_id(served):
    fleet = served.fleet
    bot = served.client(served.agent_token("bot", "#general"))
    mine = Stream(bot)
    human = Stream(served.admin())
    try:
        assert mine.headers["content-type"].startswith("text/event-stream")
        fleet.post("#dispatch", "for humans and dispatch subscribers")   # bot may not read it
        sent = fleet.post("#general", "<b>hello</b> @bot")
        got = mine.next()
        assert got["data"]["seq"] == sent.seq and got["data"]["body"] == "<b>hello</b> @bot"
        assert got["id"] == sent.seq
        seen_by_human = [human.next()["data"]["channel"], human.next()["data"]["channel"]]
        assert seen_by_human == ["#dispatch", "#general"]
        # the bot's own post comes back on its stream too, and resumes are by id
        after = fleet.agent_client("bot").call(wire.Post(channel="#general", body="mine")).message
        assert mine.next()["data"]["seq"] == after.seq
    finally:
        mine.close()
        human.close()
    later = [fleet.post("#general", f"while away {i}") for i in range(3)]
    fleet.post("#dispatch", "still not for the bot")
    again = Stream(bot, {"Last-Event-ID": str(sent.seq)})
    try:
        replayed = [again.next()["data"]["seq"] for _ in range(4)]
        assert replayed == [after.seq] + [m.seq for m in later]
        live = fleet.post("#general", "live again")
        assert again.next()["data"]["seq"] == live.seq
    finally:
        again.close()


def test_agent_states_and_metrics_follow_a_real_turn(served):
    fleet = served.fleet
    fleet.write_config('[agents.echo]\nengine = "stub"\nsandbox = "none"\n')
    served.agent_token("echo", "#general")
    admin = served.admin()
    stream = Stream(admin)
    try:
        fleet.start_supervisor("echo")
        fleet.post("#general", "wake up")
        states = []
        while states[-1:] != ["ASLEEP"] or "BUSY" not in states:
            ev = stream.next("agent")["data"]
            assert ev["agent"] == "echo"
            states.append(ev["state"])
        assert states[:3] == ["WAKING", "BUSY", "ASLEEP"], states
        posted = stream.next()["data"]
        reply = stream.next()["data"]
        assert posted["body"] == "wake up"
        assert reply["author"] == "echo" and reply["body"] == f"ack {posted['seq']}"
    finally:
        stream.close()
    events = 'chatbox_http_requests_total{method="GET",route="/v1/events",status="200"}'
    # the closed stream is counted once the server has seen it end
    def scraped() -> str | None:
        text = admin.get("/metrics").text
        return text if events in text else None

    text = wait_for(scraped, what="the closed stream in /metrics")
    assert 'chatbox_wakes_total{agent="echo"} 1.0' in text
    assert 'chatbox_turns_total{agent="echo",outcome="ok"} 1.0' in text
    assert 'chatbox_wake_latency_seconds_count{agent="echo"} 1.0' in text
    assert 'chatbox_queue_depth{agent="echo"} 0.0' in text


async def _mcp_session(url: str, token: str, body):
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                  timeout=TIMEOUT) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                with anyio.fail_after(TIMEOUT):
                    await session.initialize()
                    return await body(session)


def test_mcp_over_http_serves_the_same_tools_as_each_tokens_principal(served):
    from chatbox.mcp.tools import TOOLS

    fleet = served.fleet
    a, b = served.agent_token("ann", "#general"), served.agent_token("ben", "#general")

    async def chat(session: ClientSession):
        tools = await session.list_tools()
        res = await session.call_tool("chat", {"channel": "#general", "body": "over http"})
        refused = await session.call_tool("chat", {"channel": "#general", "body": "x",
                                                   "agent_name": "ben"})
        return {t.name for t in tools.tools}, res.structured_content, refused

    names, res, refused = anyio.run(_mcp_session, served.url, a, chat)
    assert names == {t.name for t in TOOLS}
    assert res["status"] == "ok"
    assert fleet.read("#general")[-1].author == "ann"
    assert refused.is_error and refused.structured_content["code"] == "forbidden"

    async def who(session: ClientSession):
        return (await session.call_tool("hello", {"name": "ben", "phase": "start",
                                                  "default_channels": []})).structured_content

    assert anyio.run(_mcp_session, served.url, b, who)["agent"] == "ben"
    r = served.client().post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401
