"""``chatbox mcp --agent NAME``: the MCP stdio server an agent's host starts (DESIGN §6).

The agent's identity is bound here, at start: its token comes from ``CHATBOX_TOKEN`` or its
token file, and is checked with ``Whoami`` when the broker is up (when it is down the server
starts anyway and answers ``unavailable`` until the bus reconnects by itself). No tool takes a
token or an identity. ``CHATBOX_TURN_ID`` (set by the supervisor for one turn) makes every post
part of that turn, so the broker applies the hop budget.

stdout carries protocol frames only (the SDK points fd 1 at stderr while it serves); logs go to
stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys

import anyio
import anyio.to_thread
import mcp_types as types
import structlog
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

from chatbox.bus.errors import BusError
from chatbox.runtime import env, logs
from chatbox.runtime.config import ConfigError, load
from chatbox.mcp import hub
from chatbox.mcp.adapter import Adapter
from chatbox.mcp.tools import TOOLS, TOOLSETS, ToolError
from chatbox.runtime.workspace import NAME_RE, Workspace, WorkspaceError
from chatbox.runtime.exits import Exit


log = structlog.get_logger("mcp")

INSTRUCTIONS = ("You are {agent} on ChatBox, a chat shared by agents and humans. Your identity "
                "is fixed by this server: never pass a name or token. Read with inbox or listen, "
                "ack what you handled, wait to block for new messages, escalate when a human "
                "must decide.")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chatbox mcp",
                                description="Serve the ChatBox tools over MCP stdio for one agent.")
    p.add_argument("--agent", required=True, help="the agent this server acts as")
    p.add_argument("--tools", choices=sorted(TOOLSETS), default="all",
                   help="which tools to offer (core: the twelve an agent needs most)")
    p.add_argument("--workspace", help="workspace directory (default: CHATBOX_WORKSPACE, or "
                   "the nearest directory upward holding .chatbox/)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--listen-fd", metavar="FD", type=int,
                   help="serve many sessions on this inherited, listening unix socket instead "
                        "of stdio (a supervisor's long-lived server; turns reach it through "
                        "the relay)")
    return p


def turn_from_env() -> int | None:
    try:
        return env.turn_id()
    except ValueError:
        log.warning("bad_turn_id", hint="CHATBOX_TURN_ID is not an integer; posts carry no turn")
        return None


def tool_list(toolset: str) -> list[types.Tool]:
    """The tools offered, in catalogue order, with read-only hints where truthful."""
    offered = TOOLSETS[toolset]
    return [types.Tool(name=t.name, description=t.description, input_schema=t.schema,
                       annotations=types.ToolAnnotations(read_only_hint=True)
                       if t.read_only else None)
            for t in TOOLS if t.name in offered]


def ok_result(data: dict) -> types.CallToolResult:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return types.CallToolResult(content=[types.TextContent(text=text)], structured_content=data)


def error_result(err: ToolError) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=str(err))],
                                structured_content=err.as_dict(), is_error=True)


def build_server(adapter: Adapter, toolset: str) -> Server:
    tools = tool_list(toolset)

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        run = functools.partial(adapter.call, params.name, params.arguments)
        try:
            data = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
        except ToolError as err:
            log.info("tool", tool=params.name, ok=False, code=err.code)
            return error_result(err)
        except Exception:
            log.exception("tool_failed", tool=params.name)
            return error_result(ToolError("internal", "the adapter failed; see its log"))
        log.info("tool", tool=params.name, ok=True)
        return ok_result(data)

    return Server("chatbox", version=_version(),
                  instructions=INSTRUCTIONS.format(agent=adapter.agent),
                  on_list_tools=list_tools, on_call_tool=call_tool)


def _version() -> str:
    try:
        from importlib.metadata import version
        return version("chatbox")
    except Exception:  # pragma: no cover - not installed
        return "0"


async def serve(server: Server) -> None:
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not NAME_RE.match(args.agent):
        print(f"chatbox mcp: agent name {args.agent!r} is invalid", file=sys.stderr)
        return Exit.USAGE
    try:
        ws = Workspace.find(args.workspace)
        config = load(ws.config_path)
        token = env.token() or ws.read_token(ws.agent_token_path(args.agent))
    except (WorkspaceError, ConfigError) as exc:
        print(f"chatbox mcp: {exc}", file=sys.stderr)
        return Exit.FAILED
    logs.configure(args.log_level or config.log.level, component="mcp", agent=args.agent)
    endpoints = ws.endpoints(config.bus.request, config.bus.events)
    if args.listen_fd is not None:
        return _serve_hub(args, token, endpoints)
    adapter = Adapter(args.agent, token, endpoints, toolset=args.tools, turn=turn_from_env())
    try:
        adapter.start()
    except (BusError, ToolError) as exc:  # refused, unreachable, a CURVE key missing: one line
        print(f"chatbox mcp: {args.agent}: {exc}", file=sys.stderr)
        adapter.close()
        return Exit.FAILED
    log.info("ready", tools=args.tools, turn=adapter.turn)
    try:
        anyio.run(serve, build_server(adapter, args.tools))
    except KeyboardInterrupt:
        pass
    finally:
        adapter.close()
        log.info("stopped")
    return Exit.OK


def _serve_hub(args: argparse.Namespace, token: str, endpoints) -> int:
    try:
        sock = hub.inherited(args.listen_fd)
    except OSError as exc:
        print(f"chatbox mcp: --listen-fd {args.listen_fd} is no listening unix socket: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return Exit.USAGE
    log.info("ready", tools=args.tools, listen_fd=args.listen_fd)
    try:
        anyio.run(hub.serve, sock, args.agent, token, endpoints, args.tools, build_server)
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
        log.info("stopped")
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
