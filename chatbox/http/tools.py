"""The MCP tools over HTTP: one ``chatbox.mcp.adapter.Adapter`` per principal, made on demand.

The seed's HTTP routes and MCP over Streamable HTTP both run the very tools ``chatbox mcp``
runs (``Adapter.call(name, args)``): one mapping from tool to bus request, never a second. An
adapter is bound to the principal behind a token (asked of the broker with ``Whoami``) and acts
with that token only. Adapters are kept for the tokens used most recently (at most
``MAX_ADAPTERS``; each keeps an event thread for ``listen`` and ``wait``).

Tool calls run in worker threads of their own limiter (the API makes its calls in the loop):
``listen`` and ``wait`` block for up to 60 s, and however many do, the API never waits for them.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import anyio
import anyio.to_thread
import structlog

from chatbox.bus.endpoints import Endpoints
from chatbox.bus.errors import BusError
from chatbox.http.auth import whoami
from chatbox.http.bridge import Bridge
from chatbox.http.problems import ProblemError, from_bus
from chatbox.mcp.adapter import Adapter
from chatbox.mcp.tools import ToolError

log = structlog.get_logger("http")

MAX_ADAPTERS = 64
TOOL_WORKERS = 128


class Adapters:
    def __init__(self, bridge: Bridge, endpoints: Endpoints):
        self.bridge = bridge
        self.endpoints = endpoints
        self.limiter = anyio.CapacityLimiter(TOOL_WORKERS)
        self._by_token: OrderedDict[str, Adapter] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, token: str) -> Adapter:
        """The adapter acting as ``token``'s principal (401 if the token is no principal's)."""
        adapter = self._by_token.get(token)
        if adapter is not None:
            self._by_token.move_to_end(token)
            return adapter
        who = await whoami(self.bridge, token)
        async with self._lock:
            adapter = self._by_token.get(token)
            if adapter is None:
                adapter = Adapter(who.name, token, self.endpoints, toolset="all")
                try:
                    await anyio.to_thread.run_sync(adapter.start)
                except (BusError, ToolError) as exc:
                    await anyio.to_thread.run_sync(adapter.close)
                    if isinstance(exc, ToolError):
                        raise ProblemError(exc.code, exc.message, exc.field) from None
                    raise from_bus(exc) from None
                self._by_token[token] = adapter
                evicted = []
                while len(self._by_token) > MAX_ADAPTERS:
                    evicted.append(self._by_token.popitem(last=False)[1])
                for old in evicted:
                    await anyio.to_thread.run_sync(old.close)
        return adapter

    async def call(self, token: str, tool: str, args: dict | None) -> dict:
        """Run one tool as the token's principal; a ToolError comes back as a ``ProblemError``."""
        try:
            return await self.run_tool(token, tool, args)
        except ToolError as err:
            raise ProblemError(err.code, err.message, err.field) from None

    async def run_tool(self, token: str, tool: str, args: dict | None) -> dict:
        """Run one tool as the token's principal, raising its ToolError (for MCP tool results);
        a token found unauthorized is forgotten."""
        adapter = await self.get(token)
        try:
            return await anyio.to_thread.run_sync(adapter.call, tool, args,
                                                  limiter=self.limiter)
        except ToolError as err:
            if err.code == "unauthorized":
                await self.forget(token)
            raise

    async def forget(self, token: str) -> None:
        adapter = self._by_token.pop(token, None)
        if adapter is not None:
            await anyio.to_thread.run_sync(adapter.close)

    async def close(self) -> None:
        adapters = list(self._by_token.values())
        self._by_token.clear()
        for adapter in adapters:
            await anyio.to_thread.run_sync(adapter.close)
