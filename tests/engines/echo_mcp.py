"""A tiny stdio MCP server for proving the real CLIs reach an MCP tool: one tool, `reply`.

    python -m tests.engines.echo_mcp          (or: python tests/engines/echo_mcp.py)

Each `reply(post_id, body)` call appends one JSON line to the file named by ECHO_MCP_LOG:
{"tool": "reply", "post_id": ..., "body": ..., "env": {...}} where `env` holds the CHATBOX_*
variables the server was started with (so a test sees what the CLI passed through), and `pid`.

ECHO_MCP_DELAY (seconds, float) sleeps before the server starts reading stdin, to prove a CLI
waits for a slow MCP server before its first model request. At start-up (after the delay) a line
{"event": "started", ...} is appended too, so a test can see the server was launched at all.
"""

from __future__ import annotations

import json
import os
import sys
import time

ENV_KEYS = ("CHATBOX_TURN_ID", "CHATBOX_AGENT", "CHATBOX_WORKSPACE", "ECHO_MCP_MARK")


def _log(record: dict) -> None:
    path = os.environ.get("ECHO_MCP_LOG")
    if not path:
        return
    record = {**record, "pid": os.getpid(), "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def main() -> None:
    delay = float(os.environ.get("ECHO_MCP_DELAY") or 0)
    if delay > 0:
        time.sleep(delay)

    from mcp.server.mcpserver import MCPServer  # mcp 2.x (FastMCP was renamed MCPServer)

    server = MCPServer("chatbox")

    @server.tool()
    def reply(post_id: int, body: str) -> str:
        """Reply in the thread of post `post_id` with `body`."""
        _log({"tool": "reply", "post_id": post_id, "body": body})
        return f"replied to post {post_id}"

    _log({"event": "started", "argv": sys.argv[1:]})
    server.run("stdio")


if __name__ == "__main__":
    main()
