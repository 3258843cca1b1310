"""``chatbox mcp --agent NAME --listen-fd FD``: one agent's MCP server, long-lived, many sessions.

A supervisor starts this once, so the MCP SDK is loaded before any turn needs it. The supervisor
binds and listens itself and hands the socket over, so a relay can connect the moment the
supervisor is up: its connection waits in the backlog until this server accepts. Each turn's
CLI starts the stdlib relay (supervisor/mcp_relay.py), which connects here and names its turn
in one header line (``{"turn": N}``). Every connection is one MCP session with its own
adapter bound to this agent and that turn — the same tools as the stdio server. The socket is
0600 in the agent's own directory; only the agent's own user can reach it.
"""

from __future__ import annotations

import io
import json
import socket

import anyio
import anyio.to_thread
import structlog
from mcp.server.stdio import stdio_server

from chatbox.bus.endpoints import Endpoints
from chatbox.bus.errors import Refused
from chatbox.mcp.adapter import Adapter
from chatbox.mcp.tools import ToolError

log = structlog.get_logger("mcp")

MAX_HEADER = 4096


def inherited(fd: int) -> socket.socket:
    """The listening socket the supervisor made (0600, in the agent's directory) and passed on."""
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX:
        sock.detach()
        raise OSError(0, "not a unix socket")
    return sock


def read_header(conn: socket.socket) -> int | None:
    """The relay's first line: the turn it serves (None outside a turn)."""
    raw = b""
    while not raw.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk or len(raw) >= MAX_HEADER:
            raise ValueError("the relay sent no header line")
        raw += chunk
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("the relay's header is not a JSON object")
    turn = header.get("turn")
    if turn is not None and (isinstance(turn, bool) or not isinstance(turn, int)):
        raise ValueError(f"the relay's turn is not a number: {turn!r}")
    return turn


async def session(conn: socket.socket, agent: str, token: str, endpoints: Endpoints,
                  toolset: str, build_server) -> None:
    try:
        turn = await anyio.to_thread.run_sync(read_header, conn)
    except ValueError as exc:
        log.warning("relay_refused", error=str(exc))
        conn.close()
        return
    adapter = Adapter(agent, token, endpoints, toolset=toolset, turn=turn)
    raw = conn.makefile("rwb", buffering=0)
    stdin = anyio.wrap_file(io.TextIOWrapper(io.BufferedReader(raw), encoding="utf-8",
                                             errors="replace"))
    stdout = anyio.wrap_file(io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8",
                                              write_through=True))
    try:
        await anyio.to_thread.run_sync(adapter.start)
        log.info("session", turn=turn)
        server = build_server(adapter, toolset)
        async with stdio_server(stdin, stdout) as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
    except (Refused, ToolError) as exc:
        log.warning("session_refused", turn=turn, error=str(exc))
    finally:
        await anyio.to_thread.run_sync(adapter.close)
        conn.close()
        log.info("session_ended", turn=turn)


async def guarded(*args) -> None:
    """One session; whatever ends it badly ends it alone, never the server and its others."""
    try:
        await session(*args)
    except Exception:
        log.exception("session_failed")


async def serve(sock: socket.socket, agent: str, token: str, endpoints: Endpoints, toolset: str,
                build_server) -> None:
    async with anyio.create_task_group() as tg:
        while True:
            conn, _ = await anyio.to_thread.run_sync(sock.accept, abandon_on_cancel=True)
            tg.start_soon(guarded, conn, agent, token, endpoints, toolset, build_server)
