"""Engines: how one turn of each agent CLI is spelled as argv + stdin + environment.

``build_turn`` returns ``(argv, stdin_bytes, extra_env, reply_mode)``. ``reply_mode`` says who
answers: ``"stdout"`` — the supervisor posts the turn's stdout as the reply (``stub``, and
``command`` with ``reply = true``); ``"tools"`` — the agent posts through the chatbox MCP tools
itself and stdout is only evidence. Never a shell; the prompt goes on stdin wherever the CLI
reads it there (flags and pitfalls: ``notes/cli-engines.md``).

    stub     python -m supervisor.stub --behaviour B --delay D      stdin: the batch JSON
    command  options["argv"], {agent} and {workspace} substituted    stdin: the prompt
    claude   claude -p --output-format stream-json --verbose --mcp-config=<chatbox only>
             --strict-mcp-config --tools= --allowedTools=mcp__chatbox__* --permission-mode dontAsk
             --max-turns N                                         stdin: the prompt
    codex    codex exec --json --skip-git-repo-check --sandbox read-only
             -c mcp_servers.chatbox.… -                            stdin: the prompt
    gemini   gemini -p <pointer> --output-format stream-json --skip-trust
             --allowed-mcp-server-names chatbox                    stdin: the prompt
    kimi     kimi -p <prompt> --output-format stream-json          (Kimi Code reads no stdin)

Kimi Code and Gemini take MCP servers only from their config files (``$KIMI_CODE_HOME/mcp.json``,
``$GEMINI_CLI_HOME/.gemini/settings.json``); ``options["home"]`` points the CLI at a per-agent
home, and ``mcp_config()`` is the ``mcpServers`` object to write there.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping

from chatbox.supervisor.errors import EngineError

ENGINES = ("stub", "command", "claude", "codex", "gemini", "kimi")
STUB_BEHAVIOURS = ("reply", "fail", "hang", "repeat", "give-up")
DEFAULT_MAX_TURNS = 20
# Linux refuses one argv element over 128 KiB (MAX_ARG_STRLEN); keep a margin.
MAX_ARG_BYTES = 120_000
API_KEY_VARIABLES = frozenset({
    "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "OPENAI_API_KEY", "CODEX_API_KEY",
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "MOONSHOT_API_KEY", "KIMI_API_KEY", "KIMI_MODEL_API_KEY",
})
_GEMINI_POINTER = "Act on the ChatBox messages above, as they instruct."

Turn = tuple[list[str], bytes, dict[str, str], str]


def build_turn(engine: str, *, agent: str, prompt: str, batch_json: bytes, options: dict,
               workspace: str, mcp_command: list[str]) -> Turn:
    """The command of one turn of ``engine``; ``EngineError`` if it cannot be built."""
    builder = _BUILDERS.get(engine)
    if builder is None:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return builder(agent=agent, prompt=prompt, batch_json=batch_json, options=options or {},
                   workspace=workspace, mcp_command=mcp_command)


def mcp_config(mcp_command: list[str]) -> dict:
    """The ``mcpServers`` object holding the chatbox server and nothing else."""
    if not mcp_command:
        raise EngineError("the chatbox MCP command is empty")
    return {"mcpServers": {"chatbox": {"type": "stdio", "command": mcp_command[0],
                                       "args": list(mcp_command[1:])}}}


def strip_api_keys(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without API-key variables (auth = "subscription": the CLI's own login is used)."""
    return {k: v for k, v in env.items()
            if k.upper() not in API_KEY_VARIABLES and not k.upper().endswith("_API_KEY")}


# --------------------------------------------------------------------------- builders

def _stub(*, batch_json: bytes, options: dict, **_) -> Turn:
    behaviour = options.get("behaviour", "reply")
    if behaviour not in STUB_BEHAVIOURS:
        raise EngineError(f"stub behaviour {behaviour!r} is unknown; expected one of "
                          f"{', '.join(STUB_BEHAVIOURS)}")
    delay = _number(options.get("delay", 0.0), "stub delay")
    if not sys.executable:
        raise EngineError("the stub needs sys.executable, which this Python does not know")
    # The stub imports only the standard library: run its file isolated and without `site`
    # (half of a Python start-up here), so a turn starts in ~15 ms instead of ~30.
    stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stub.py")
    argv = [sys.executable, "-I", "-S", stub, "--behaviour", behaviour, "--delay", repr(delay)]
    return argv, batch_json, {}, "stdout"


def _command(*, agent: str, prompt: str, options: dict, workspace: str, **_) -> Turn:
    template = options.get("argv")
    if not template or not isinstance(template, list) or not all(isinstance(a, str) for a in template):
        raise EngineError("engine 'command' needs options argv = a non-empty list of strings")
    argv = [a.replace("{agent}", agent).replace("{workspace}", workspace) for a in template]
    return argv, prompt.encode("utf-8"), {}, "stdout" if options.get("reply") else "tools"


def _claude(*, prompt: str, options: dict, mcp_command: list[str], **_) -> Turn:
    allowed = ",".join(["mcp__chatbox__*", *options.get("allowed_tools", ())])
    argv = ["claude", "-p", "--output-format", "stream-json", "--verbose",
            "--mcp-config=" + json.dumps(mcp_config(mcp_command), separators=(",", ":")),
            "--strict-mcp-config", "--tools=" + ",".join(options.get("tools", ())),
            "--allowedTools=" + allowed, "--permission-mode", "dontAsk",
            "--max-turns", str(int(_number(options.get("max_turns", DEFAULT_MAX_TURNS), "max_turns")))]
    argv += _model(options)
    return argv, prompt.encode("utf-8"), {}, "tools"


def _codex(*, prompt: str, options: dict, mcp_command: list[str], **_) -> Turn:
    server = mcp_config(mcp_command)["mcpServers"]["chatbox"]
    argv = ["codex", "exec", "--json", "--skip-git-repo-check",
            "--sandbox", options.get("sandbox", "read-only"),
            # -c values are TOML; a JSON string or array of strings is valid TOML
            "-c", "mcp_servers.chatbox.command=" + json.dumps(server["command"]),
            "-c", "mcp_servers.chatbox.args=" + json.dumps(server["args"]),
            "-c", 'mcp_servers.chatbox.default_tools_approval_mode="approve"']
    argv += _model(options)
    argv.append("-")  # the prompt is on stdin (a positional prompt would also read stdin)
    return argv, prompt.encode("utf-8"), _home(options, "CODEX_HOME"), "tools"


def _gemini(*, prompt: str, options: dict, **_) -> Turn:
    # gemini appends -p to what stdin carries; the prompt itself stays off the command line
    argv = ["gemini", "-p", _GEMINI_POINTER, "--output-format", "stream-json", "--skip-trust",
            "--allowed-mcp-server-names", "chatbox"]
    argv += _model(options)
    return argv, prompt.encode("utf-8"), _home(options, "GEMINI_CLI_HOME"), "tools"


def _kimi(*, prompt: str, options: dict, **_) -> Turn:
    # Kimi Code's print mode takes the prompt only as -p's value: it has to be on the command line
    if len(prompt.encode("utf-8")) > MAX_ARG_BYTES:
        raise EngineError(f"the prompt is {len(prompt.encode('utf-8'))} bytes; kimi -p takes at "
                          f"most {MAX_ARG_BYTES} (a smaller batch fits)")
    argv = ["kimi", "-p", prompt, "--output-format", "stream-json"] + _model(options)
    env = {"KIMI_CODE_NO_AUTO_UPDATE": "1", **_home(options, "KIMI_CODE_HOME")}
    return argv, b"", env, "tools"


def _model(options: dict) -> list[str]:
    return ["--model", str(options["model"])] if options.get("model") else []


def _home(options: dict, variable: str) -> dict[str, str]:
    return {variable: str(options["home"])} if options.get("home") else {}


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise EngineError(f"{what} must be a number of 0 or more, got {value!r}")
    return float(value)


_BUILDERS: dict[str, Callable[..., Turn]] = {
    "stub": _stub, "command": _command, "claude": _claude, "codex": _codex,
    "gemini": _gemini, "kimi": _kimi,
}


# --------------------------------------------------------------------------- engine errors

def engine_error(engine: str, output: str) -> bool:
    """True when the output carries the engine's own error result, whatever the exit code."""
    if engine not in _BUILDERS:
        raise EngineError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    match engine:
        case "claude":
            final = next((e for e in reversed(_events(output)) if e.get("type") == "result"), None)
            return final is not None and (final.get("is_error") is True
                                          or str(final.get("subtype", "")).startswith("error"))
        case "codex":
            # turn.failed, or a top-level error that no turn.completed followed (item-level
            # "error" items are warnings and do not count)
            kinds = [e.get("type") for e in _events(output)]
            return "turn.failed" in kinds or ("error" in kinds and "turn.completed" not in kinds)
        case "gemini":
            return any((e.get("type") == "result" and e.get("status") == "error")
                       or (e.get("type") == "error" and e.get("severity") == "error")
                       for e in _events(output))
        case _:
            # stub and command have no error record; Kimi Code reports errors on stderr + exit 1
            return False


def _events(output: str) -> list[dict]:
    """The JSON objects of a JSONL output; other lines (debug noise, a cut last line) skipped."""
    events = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events
