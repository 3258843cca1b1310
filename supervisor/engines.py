"""Engines: how one turn of each agent CLI is spelled as argv + stdin + environment.

``build_turn`` returns a ``Turn``: argv, stdin bytes, extra environment, and ``reply_mode`` —
``"stdout"``: the supervisor posts the turn's stdout as the reply (``stub``, and ``command``
with ``reply = true``); ``"tools"``: the agent posts through the chatbox MCP tools itself and
stdout is only evidence. Never a shell, and no message text on any command line
(``/proc/PID/cmdline`` is world-readable): the prompt goes on stdin, or — Kimi Code reads no
stdin in print mode — a prompt without bodies tells the agent to fetch its batch with ``inbox``.

    stub     python -I -S supervisor/stub.py --behaviour B --delay D     stdin: the batch JSON
    command  options argv, {agent} and {workspace} substituted           stdin: the prompt
    claude   claude -p --output-format stream-json --verbose --mcp-config=<chatbox only>
             --strict-mcp-config --tools=<opened> --allowedTools=mcp__chatbox__*
             --permission-mode dontAsk --max-turns N                     stdin: the prompt
    codex    codex exec --json --skip-git-repo-check --sandbox read-only -   stdin: the prompt
    gemini   gemini --output-format stream-json --skip-trust             stdin: the prompt
    kimi     kimi -p <pointer without bodies> --output-format stream-json

Each real CLI runs with its per-agent configuration written by ``cli_homes`` (the chatbox server
alone, made to wait for, built-in tools off). ``@`` in message text is escaped for claude and
gemini, which read ``@path`` as a file to paste into the request. Facts: docs/ENGINES.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec

from chatbox.runtime.config import Behaviour, Engine
from chatbox.supervisor import cli_homes
from chatbox.supervisor.errors import EngineError

ENGINES: tuple[str, ...] = typing.get_args(Engine)
STUB_BEHAVIOURS: tuple[str, ...] = typing.get_args(Behaviour)
DEFAULT_MAX_TURNS = 20
API_KEY_VARIABLES = frozenset({
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "CODEX_API_KEY",
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "MOONSHOT_API_KEY", "KIMI_API_KEY", "KIMI_MODEL_API_KEY",
    "CHATBOX_MODEL_API_KEY",
})
# each CLI's own command, and what to install when it is missing (supervisor start check)
COMMANDS = {"claude": "claude", "codex": "codex", "gemini": "gemini", "kimi": "kimi"}
PACKAGES = {"claude": "@anthropic-ai/claude-code", "codex": "@openai/codex",
            "gemini": "@google/gemini-cli", "kimi": "@moonshot-ai/kimi-code"}


class TurnInput(msgspec.Struct, kw_only=True):
    """What a builder needs: the turn's text, where it runs, and the agent's engine options."""

    agent: str
    prompt: str            # the full prompt, bodies included (stdin only)
    pointer: str           # the same turn without any message text (for a command line)
    batch_json: bytes      # the stub's input
    workspace: str
    mcp: list[str]         # how the CLI starts the chatbox MCP server (the relay)
    home: Path | None = None  # the agent's CLI home (cli_homes); None for stub and command
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None  # auth = "api": read from the agent's 0600 key file
    tools: list[str] = []  # built-in tools the agent's config opens beside the chatbox ones
    max_turns: int = DEFAULT_MAX_TURNS
    stub: dict = {}
    command: list[str] = []
    reply: bool = True


class Turn(msgspec.Struct, kw_only=True):
    argv: list[str]
    stdin: bytes
    env: dict[str, str]
    reply_mode: str  # "stdout" | "tools"


def build_turn(engine: str, inp: TurnInput) -> Turn:
    """The command of one turn of ``engine``; ``EngineError`` if it cannot be built."""
    builder = _BUILDERS.get(engine)
    if builder is None:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine in COMMANDS:
        if inp.home is None:
            raise EngineError(f"engine {engine!r} needs the agent's CLI home")
        if not inp.mcp:
            raise EngineError("the chatbox MCP command is empty")
        cli_homes.prepare(inp.home)
    return builder(inp)


# how each CLI's own login is started, and what to do in it
LOGIN = {"claude": (["claude"], "type /login, sign in, then /exit"),
         "codex": (["codex", "login"], "sign in in the browser it opens"),
         "gemini": (["gemini"], "choose a way to sign in, then /quit"),
         "kimi": (["kimi"], "type /login, sign in, then /exit")}


def login_command(engine: str, home: Path) -> tuple[list[str], dict[str, str], str]:
    """argv, extra environment and a hint for the CLI's own interactive login, made in the
    agent's CLI home so that its turns find it."""
    if engine not in LOGIN:
        raise EngineError(f"engine {engine!r} has no login of its own")
    cli_homes.prepare(home)
    argv, hint = LOGIN[engine]
    return list(argv), _home_env(home, engine), hint


def preflight(engine: str, path: str | None) -> str | None:
    """Why ``engine`` cannot run with this ``PATH``, in one line naming what to install; None
    when it can. A ``kimi`` must be Kimi Code (2.x), not the archived Python kimi-cli (1.x)."""
    command = COMMANDS.get(engine)
    if command is None:
        return None
    install = (f"install it with `npm install -g {PACKAGES[engine]}` (or run "
               "deploy/engines/install.sh and put its bin/ on PATH)")
    found = shutil.which(command, path=path)
    if found is None:
        return f"the {engine} engine needs `{command}` on PATH, and there is none; {install}"
    if engine == "kimi":
        try:
            done = subprocess.run([found, "--version"], capture_output=True, text=True,
                                  timeout=30, stdin=subprocess.DEVNULL)
            said = (done.stdout + done.stderr).strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{found} --version` did not answer ({exc}); {install}"
        version = _VERSION.search(said)
        if version is None or int(version.group(1)) < 2:
            return (f"`{found}` is not Kimi Code (it says {said[:80]!r}; the archived kimi-cli "
                    f"cannot run headless turns); {install}")
    return None


_VERSION = re.compile(r"(\d+)\.\d+")


def strip_api_keys(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without API-key variables (auth = "subscription": the CLI's own login is used)."""
    return {k: v for k, v in env.items()
            if k.upper() not in API_KEY_VARIABLES and not k.upper().endswith("_API_KEY")}


def escape_at(text: str) -> str:
    """``@word`` would be a file reference to claude and gemini; ``\\@word`` is plain text."""
    return text.replace("@", "\\@")


# --------------------------------------------------------------------------- builders

def _stub(inp: TurnInput) -> Turn:
    behaviour = inp.stub.get("behaviour", "reply")
    if behaviour not in STUB_BEHAVIOURS:
        raise EngineError(f"stub behaviour {behaviour!r} is unknown; expected one of "
                          f"{', '.join(STUB_BEHAVIOURS)}")
    delay = _number(inp.stub.get("delay", 0.0), "stub delay")
    if not sys.executable:
        raise EngineError("the stub needs sys.executable, which this Python does not know")
    # The stub imports only the standard library: run its file isolated and without `site`
    # (half of a Python start-up here), so a turn starts in ~15 ms instead of ~30.
    stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub.py")
    argv = [sys.executable, "-I", "-S", stub, "--behaviour", behaviour, "--delay", repr(delay)]
    return Turn(argv=argv, stdin=inp.batch_json, env={}, reply_mode="stdout")


def _command(inp: TurnInput) -> Turn:
    template = inp.command
    if not template or not all(isinstance(a, str) for a in template):
        raise EngineError("engine 'command' needs command = a non-empty list of strings")
    argv = [a.replace("{agent}", inp.agent).replace("{workspace}", inp.workspace)
            for a in template]
    return Turn(argv=argv, stdin=inp.prompt.encode("utf-8"), env={},
                reply_mode="stdout" if inp.reply else "tools")


def _claude(inp: TurnInput) -> Turn:
    config = cli_homes.claude(inp.home, inp.mcp)
    builtins = [t for t in inp.tools if not t.startswith("mcp__")]
    argv = ["claude", "-p", "--output-format", "stream-json", "--verbose",
            f"--mcp-config={config}", "--strict-mcp-config", "--tools=" + ",".join(builtins),
            "--allowedTools=" + ",".join(["mcp__chatbox__*", *inp.tools]),
            "--permission-mode", "dontAsk", "--max-turns", str(inp.max_turns)]
    argv += _model(inp)
    env = {**_home_env(inp.home, "claude"),
           "MCP_TIMEOUT": str(cli_homes.MCP_STARTUP_SECONDS * 1000),
           "DISABLE_AUTOUPDATER": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
           # a bad key fails the turn in seconds instead of ten retries over minutes
           "CLAUDE_CODE_MAX_RETRIES": "2"}
    if inp.base_url:
        env["ANTHROPIC_BASE_URL"] = inp.base_url
    if inp.api_key:
        env["ANTHROPIC_API_KEY"] = inp.api_key
    return Turn(argv=argv, stdin=escape_at(inp.prompt).encode("utf-8"), env=env,
                reply_mode="tools")


def _codex(inp: TurnInput) -> Turn:
    cli_homes.codex(inp.home, inp.mcp, model=inp.model, base_url=inp.base_url, tools=inp.tools)
    argv = ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox",
            "workspace-write" if "shell" in inp.tools else "read-only", "-"]
    env = _home_env(inp.home, "codex")
    if inp.api_key:
        env["CHATBOX_MODEL_API_KEY" if inp.base_url else "CODEX_API_KEY"] = inp.api_key
    return Turn(argv=argv, stdin=inp.prompt.encode("utf-8"), env=env, reply_mode="tools")


def _gemini(inp: TurnInput) -> Turn:
    cli_homes.gemini(inp.home, inp.mcp, api_key=inp.api_key is not None, tools=inp.tools)
    # headless because stdin is not a terminal; the prompt stays off the command line
    argv = ["gemini", "--output-format", "stream-json", "--skip-trust"] + _model(inp)
    env = _home_env(inp.home, "gemini")
    if inp.base_url:
        env["GOOGLE_GEMINI_BASE_URL"] = inp.base_url
    if inp.api_key:
        env["GEMINI_API_KEY"] = inp.api_key
    return Turn(argv=argv, stdin=escape_at(inp.prompt).encode("utf-8"), env=env,
                reply_mode="tools")


def _kimi(inp: TurnInput) -> Turn:
    cli_homes.kimi(inp.home, inp.mcp, tools=inp.tools)
    argv = ["kimi", "-p", inp.pointer, "--output-format", "stream-json"]
    env = {**_home_env(inp.home, "kimi"), "KIMI_CODE_NO_AUTO_UPDATE": "1",
           "KIMI_DISABLE_TELEMETRY": "1"}
    if not (inp.api_key or inp.base_url):
        argv += _model(inp)  # a model of the login's config.toml
    else:  # a model without a login: Kimi Code's environment settings (--model would look it
        # up in config.toml instead)
        env["KIMI_MODEL_PROVIDER_TYPE"] = "kimi"
        if inp.model:
            env["KIMI_MODEL_NAME"] = inp.model
        if inp.base_url:
            env["KIMI_MODEL_BASE_URL"] = inp.base_url.rstrip("/") + "/v1"
        if inp.api_key:
            env["KIMI_MODEL_API_KEY"] = inp.api_key
    return Turn(argv=argv, stdin=b"", env=env, reply_mode="tools")


def _home_env(home: Path, engine: str) -> dict[str, str]:
    """The CLI's own home variable and a private TMPDIR (gemini writes error reports there),
    for its turns and its login alike."""
    return {cli_homes.HOME_VARIABLE[engine]: str(cli_homes.engine_home(home, engine)),
            "TMPDIR": str(home / "tmp")}


def _model(inp: TurnInput) -> list[str]:
    return ["--model", inp.model] if inp.model else []


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise EngineError(f"{what} must be a number of 0 or more, got {value!r}")
    return float(value)


_BUILDERS: dict[str, Callable[[TurnInput], Turn]] = {
    "stub": _stub, "command": _command, "claude": _claude, "codex": _codex,
    "gemini": _gemini, "kimi": _kimi,
}
