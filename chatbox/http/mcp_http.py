"""MCP over Streamable HTTP at ``/mcp``: the tools of ``chatbox mcp``, for many principals at once.

For MCP hosts on another machine or in a container, which cannot start ``chatbox mcp`` beside
the broker. One server, many agents: the identity is the bearer token of each request (asked of
the broker with ``Whoami``), never an argument, and a session opened with one token answers
only to that token (the SDK compares the principal behind every request with its session's
owner). Each tool call runs the same ``Adapter.call`` as the stdio server, as that principal.
"""

from __future__ import annotations

import hashlib
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

import mcp_types as types
import structlog
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import HTTPConnection
from starlette.types import Receive, Scope, Send

from chatbox.http.auth import bearer, whoami
from chatbox.http.guard import MAX_BODY
from chatbox.http.problems import ProblemError, unauthorized
from chatbox.mcp.server import error_result, ok_result, tool_list
from chatbox.mcp.tools import ToolError

log = structlog.get_logger("http")

INSTRUCTIONS = ("You are on ChatBox, a chat shared by agents and humans. Your identity is the "
                "token your host sends: never pass a name or token. Read with inbox or listen, "
                "ack what you handled, wait to block for new messages, escalate when a human "
                "must decide.")


def build(server_state, version: str) -> tuple[StreamableHTTPSessionManager, McpApp]:
    """The session manager (run it in the app's lifespan) and the ASGI app to mount at /mcp."""
    tools = tool_list("all")

    async def list_tools(ctx, params) -> types.ListToolsResult:
        return types.ListToolsResult(tools=tools)

    async def call_tool(ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        user = ctx.request.scope.get("user") if ctx.request is not None else None
        if not isinstance(user, AuthenticatedUser):
            return error_result(ToolError("unauthorized", "no principal behind this session"))
        try:
            data = await server_state.adapters.run_tool(user.access_token.token, params.name,
                                                        params.arguments)
        except ToolError as err:
            log.info("mcp_tool", tool=params.name, ok=False, code=err.code)
            return error_result(err)
        except ProblemError as err:
            return error_result(ToolError(err.code, err.detail, err.field))
        except Exception:
            log.exception("mcp_tool_failed", tool=params.name)
            return error_result(ToolError("internal", "the server failed; see its log"))
        log.info("mcp_tool", tool=params.name, ok=True)
        return ok_result(data)

    mcp = Server("chatbox", version=version, instructions=INSTRUCTIONS,
                 on_list_tools=list_tools, on_call_tool=call_tool)
    manager = StreamableHTTPSessionManager(mcp, max_request_body_size=MAX_BODY)

    return manager, McpApp(server_state, manager)


class McpApp:
    """The ASGI app at /mcp: the bearer token's principal, then the SDK's session manager."""

    def __init__(self, server_state, manager: StreamableHTTPSessionManager):
        self.server_state = server_state
        self.manager = manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            token = bearer(HTTPConnection(scope))
            if token is None:
                raise unauthorized("/mcp needs 'Authorization: Bearer <token>' of a principal")
            who = await whoami(self.server_state.bridge, token)
        except ProblemError as exc:
            await exc.response()(scope, receive, send)
            return
        subject = hashlib.sha256(token.encode()).hexdigest()
        scope["user"] = AuthenticatedUser(AccessToken(token=token, client_id=who.name,
                                                      scopes=[], subject=subject))
        await self.manager.handle_request(scope, receive, send)


@asynccontextmanager
async def running(manager: StreamableHTTPSessionManager) -> AsyncIterator[None]:
    async with manager.run():
        yield
