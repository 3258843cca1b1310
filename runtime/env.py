"""The ``CHATBOX_*`` environment variables: every name is read here and nowhere else.

Precedence everywhere: command line > environment > ``chatbox.toml`` > defaults.

The seed (AgentChat) was configured by ``AGENTCHAT_*`` variables. ``AGENTCHAT_WORKSPACE`` is
still honoured; any other is never silently ignored: :func:`seed_notices` says, once per
process, that it is the seed's and what replaces it (the ``CHATBOX_*`` of the same name, if
there is one) or that nothing does.
"""

from __future__ import annotations

import os
import sys

WORKSPACE = "CHATBOX_WORKSPACE"
WORKSPACE_ALIAS = "AGENTCHAT_WORKSPACE"  # the seed's name, still honoured
TOKEN = "CHATBOX_TOKEN"
LOG_LEVEL = "CHATBOX_LOG_LEVEL"
BUS_REQUEST = "CHATBOX_BUS_REQUEST"
BUS_EVENTS = "CHATBOX_BUS_EVENTS"
# set by a supervisor for the one turn it runs, read by the clients that turn starts
TURN_ID = "CHATBOX_TURN_ID"
AGENT = "CHATBOX_AGENT"

SEED_PREFIX = "AGENTCHAT_"
OURS = (WORKSPACE, TOKEN, LOG_LEVEL, BUS_REQUEST, BUS_EVENTS, TURN_ID, AGENT)
# The seed's own variables (its broker_core.py, broker_http.py, broker_daemon.py) and what
# takes their place here.
SEED_REPLACED = {
    "AGENTCHAT_AUTH_TOKEN": "the seed's one shared secret is gone: every principal has its own "
                            "token (a token file, or CHATBOX_TOKEN for one command)",
    "AGENTCHAT_HTTP_PORT": "`chatbox serve --port N` sets the HTTP port",
    "AGENTCHAT_HTTP_HOST": "`chatbox serve --host ADDR` sets the HTTP address (default "
                           "127.0.0.1)",
    "AGENTCHAT_MCP_STDIO": "an agent's host starts `chatbox mcp --agent NAME` for MCP over "
                           "stdio",
    "AGENTCHAT_CORS_ORIGINS": "the HTTP API takes writes from its own origin only; "
                              "`chatbox serve --allow-host NAME` names other host names",
}
_announced = False


def _get(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def workspace() -> str | None:
    """The workspace root named by the environment, if any."""
    return _get(WORKSPACE) or _get(WORKSPACE_ALIAS)


def token() -> str | None:
    """A bearer token given by the environment instead of a token file."""
    return _get(TOKEN)


def log_level() -> str | None:
    return _get(LOG_LEVEL)


def bus_endpoint(key: str) -> str | None:
    """``CHATBOX_BUS_REQUEST`` or ``CHATBOX_BUS_EVENTS`` for ``key`` ``request``/``events``."""
    return _get({"request": BUS_REQUEST, "events": BUS_EVENTS}[key])


def turn_id() -> int | None:
    """The turn a supervisor started this process for; ValueError if it is not a number."""
    raw = _get(TURN_ID)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{TURN_ID} must be a turn number, got {raw!r}") from None


def for_turn(turn: int, agent: str, workspace_root: str) -> dict[str, str]:
    """The variables a supervisor gives the turn it starts (and the turn's MCP server)."""
    return {TURN_ID: str(turn), AGENT: agent, WORKSPACE: workspace_root}


def seed_notices(environ: dict[str, str] | None = None) -> list[str]:
    """One sentence per ``AGENTCHAT_*`` variable that ChatBox does not read as it is."""
    environ = os.environ if environ is None else environ
    out = []
    for name in sorted(n for n in environ if n.startswith(SEED_PREFIX)):
        ours = "CHATBOX_" + name[len(SEED_PREFIX):]
        if name == WORKSPACE_ALIAS:
            named = environ.get(WORKSPACE, "").strip()
            if named and named != environ[name].strip():
                out.append(f"{name} is the seed's name for {WORKSPACE}, which is also set and "
                           f"wins: {name} is not used")
        elif ours in OURS:
            out.append(f"{name} is the seed's variable and is not read: ChatBox reads {ours}")
        elif name in SEED_REPLACED:
            out.append(f"{name} is the seed's variable and is not read: {SEED_REPLACED[name]}")
        else:
            out.append(f"{name} is the seed's variable and nothing in ChatBox replaces it: "
                       "it is not read")
    return out


def announce_seed_variables() -> None:
    """Print :func:`seed_notices` on stderr, once per process, one line each."""
    global _announced
    if _announced:
        return
    _announced = True
    for line in seed_notices():
        print(f"chatbox: {line}", file=sys.stderr, flush=True)
