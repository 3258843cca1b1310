"""ChatBox configures each agent CLI itself: the per-agent CLI home and what is written there.

Every real engine runs with its own configuration directory under the agent's home (by default
``.chatbox/agents/NAME/home``, 0700; ``home`` in ``chatbox.toml`` moves it): the chatbox MCP
server is registered there and nothing else, the built-in tools are off unless the agent's
``tools`` opens them, and the CLI's own login (``chatbox agent login NAME``) lands there too.
What ChatBox writes is rewritten before every turn (the relay names the turn); what the CLI or
its login wrote beside it is kept.

    claude  $CLAUDE_CONFIG_DIR = HOME/claude    HOME/claude/chatbox-mcp.json (--mcp-config)
    codex   $CODEX_HOME        = HOME/codex     config.toml (ChatBox's; auth.json is the login's)
    gemini  $GEMINI_CLI_HOME   = HOME/gemini    .gemini/settings.json (merged)
    kimi    $KIMI_CODE_HOME    = HOME/kimi      mcp.json, config.toml (merged)

Facts behind each setting, measured with the real CLIs: docs/ENGINES.md.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from chatbox.runtime.workspace import write_secret
from chatbox.supervisor.errors import EngineError

# the chatbox tools, as each CLI names an MCP server's tools (gemini allow-lists exact names)
CHATBOX_TOOLS = ("hello", "chat", "start_post", "reply", "get_post", "listen", "subscribe",
                 "unsubscribe", "rooms", "approve", "deny", "pin_post", "unpin_post", "close_post",
                 "resolve_message", "unresolve_message", "ack", "inbox", "wait", "escalate",
                 "search", "agents", "decisions")
MCP_STARTUP_SECONDS = 30  # how long each CLI waits for the chatbox server before its first request
HOME_VARIABLE = {"claude": "CLAUDE_CONFIG_DIR", "codex": "CODEX_HOME",
                 "gemini": "GEMINI_CLI_HOME", "kimi": "KIMI_CODE_HOME"}


def engine_home(home: Path, engine: str) -> Path:
    return home / engine


def prepare(home: Path) -> None:
    """The agent's CLI home and its private TMPDIR, 0700."""
    for path in (home, home / "tmp"):
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)


def write_private(path: Path, text: str) -> None:
    """``text`` to ``path``, 0600, atomically: a turn never reads half a config file."""
    write_secret(path, text.rstrip("\n"))  # the workspace's one atomic 0600 writer


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise EngineError(f"{path} is not valid JSON ({exc}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise EngineError(f"{path} is not valid TOML ({exc}); fix or remove it") from None


# --------------------------------------------------------------------------- per engine

def claude(home: Path, mcp: list[str]) -> Path:
    """The --mcp-config file: the chatbox server alone (with --strict-mcp-config)."""
    path = engine_home(home, "claude") / "chatbox-mcp.json"
    config = {"mcpServers": {"chatbox": {"type": "stdio", "command": mcp[0], "args": mcp[1:]}}}
    write_private(path, json.dumps(config, indent=2) + "\n")
    return path


def codex(home: Path, mcp: list[str], *, model: str | None, base_url: str | None,
          tools: list[str]) -> Path:
    """``$CODEX_HOME/config.toml``: the chatbox server required (codex then waits for it, and
    fails the turn if it cannot start), its tools approved, the built-in tools off."""
    opened = set(tools)
    config: dict[str, Any] = {
        "web_search": "live" if "web_search" in opened else "disabled",
        "features": {"shell_tool": "shell" in opened, "unified_exec": "shell" in opened,
                     "view_image": "view_image" in opened, "goals": False,
                     "image_generation": False, "apps": False},
        "agents": {"enabled": False},
        "mcp_servers": {"chatbox": {
            "command": mcp[0], "args": mcp[1:], "required": True,
            "startup_timeout_sec": MCP_STARTUP_SECONDS,
            "env_vars": ["CHATBOX_TURN_ID", "CHATBOX_AGENT", "CHATBOX_WORKSPACE"],
            "default_tools_approval_mode": "approve"}},
    }
    if model:
        config["model"] = model
    if base_url:
        config["model_provider"] = "chatbox"
        config["model_providers"] = {"chatbox": {
            "name": "chatbox", "base_url": base_url.rstrip("/") + "/v1", "wire_api": "responses",
            "env_key": "CHATBOX_MODEL_API_KEY", "request_max_retries": 2,
            "stream_max_retries": 2}}
    path = engine_home(home, "codex") / "config.toml"
    write_private(path, tomli_w.dumps(config))
    return path


def gemini(home: Path, mcp: list[str], *, api_key: bool, tools: list[str]) -> Path:
    """``.gemini/settings.json``: the chatbox server trusted, the tool allow-list (which covers
    MCP tools too) naming the chatbox tools and whatever ``tools`` opens; the rest is kept."""
    path = engine_home(home, "gemini") / ".gemini" / "settings.json"
    settings = _read_json(path)
    settings["mcpServers"] = {"chatbox": {"command": mcp[0], "args": mcp[1:], "trust": True,
                                          "timeout": MCP_STARTUP_SECONDS * 1000}}
    settings.setdefault("tools", {})["core"] = [f"mcp_chatbox_{t}" for t in CHATBOX_TOOLS] + tools
    settings.setdefault("privacy", {})["usageStatisticsEnabled"] = False
    if api_key:
        settings.setdefault("security", {}).setdefault("auth", {})["selectedType"] = "gemini-api-key"
    write_private(path, json.dumps(settings, indent=2) + "\n")
    return path


def kimi(home: Path, mcp: list[str], *, tools: list[str]) -> Path:
    """``mcp.json`` with the chatbox server alone; ``config.toml`` enabling only the chatbox
    tools (built-ins are enabled by exact name), its other keys (the login's) kept."""
    base = engine_home(home, "kimi")
    write_private(base / "mcp.json", json.dumps({"mcpServers": {"chatbox": {
        "command": mcp[0], "args": mcp[1:], "startupTimeoutMs": MCP_STARTUP_SECONDS * 1000}}},
        indent=2) + "\n")
    path = base / "config.toml"
    config = _read_toml(path)
    config.setdefault("tools", {})["enabled"] = ["mcp__chatbox__*", *tools]
    config.setdefault("background", {})["print_background_mode"] = "exit"
    write_private(path, tomli_w.dumps(config))
    return path
