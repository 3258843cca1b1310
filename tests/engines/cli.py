"""How to run one headless turn of each real agent CLI against a model endpoint and one stdio MCP
server — the invocations measured in docs/ENGINES.md, as code.

Each ``*_turn`` builder writes the CLI's per-agent config into ``home`` (a private directory, the
CLI's own home) and returns an :class:`Invocation`: argv (no shell, no message text on it), the
complete child environment (allow-listed, not inherited), the bytes for stdin, and the cwd.
:func:`run` executes one with a wall-clock bound, in its own process group.

``McpServer`` is what to register: the command line of a stdio MCP server, the environment it gets
from its config entry, and the names of variables the CLI must pass through to it from its own
environment (CHATBOX_TURN_ID, ...).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PREFIX = REPO / "build" / "engines"
INSTALLER = REPO / "deploy" / "engines" / "install.sh"
ECHO_MCP = Path(__file__).with_name("echo_mcp.py")

PASS_THROUGH = ("CHATBOX_TURN_ID", "CHATBOX_AGENT", "CHATBOX_WORKSPACE")
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class McpServer:
    name: str = "chatbox"
    command: str = sys.executable
    args: list[str] = field(default_factory=lambda: [str(ECHO_MCP)])
    env: dict[str, str] = field(default_factory=dict)       # written into the CLI's MCP config entry
    pass_env: tuple[str, ...] = PASS_THROUGH                 # passed from the CLI's own environment


@dataclass
class Invocation:
    argv: list[str]
    env: dict[str, str]
    stdin: bytes = b""
    cwd: str | None = None
    files: dict[str, str] = field(default_factory=dict)     # config files written (path -> text)


@dataclass
class Result:
    rc: int | None      # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float

    def events(self) -> list[dict]:
        """stdout's JSON lines (non-JSON lines skipped)."""
        out = []
        for line in self.stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out


def _write(inv: Invocation, path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, 0o600)
    inv.files[str(path)] = text


def _base_env(home: Path, prefix: Path, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"PATH": f"{prefix / 'bin'}:{BASE_PATH}", "HOME": str(home), "LANG": "C.UTF-8",
           "TMPDIR": str(home / "tmp")}
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(extra or {})
    return env


# ---- claude ------------------------------------------------------------------------------------

def claude_turn(prefix: Path, home: Path, cwd: Path, prompt: str, mcp: McpServer, *, base_url: str | None,
                api_key: str | None, env: dict[str, str] | None = None, max_turns: int = 10,
                mcp_timeout_ms: int = 30000, max_retries: int | None = None) -> Invocation:
    """claude -p, prompt on stdin, only the one MCP server, no built-in tools, MCP tools pre-approved."""
    e = _base_env(home, prefix, env)
    e.update({"CLAUDE_CONFIG_DIR": str(home / ".claude"), "DISABLE_AUTOUPDATER": "1",
              "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
              "MCP_TIMEOUT": str(mcp_timeout_ms)})     # bounded wait for the MCP server (print mode waits)
    if base_url:
        e["ANTHROPIC_BASE_URL"] = base_url
    if api_key:
        e["ANTHROPIC_API_KEY"] = api_key
    if max_retries is not None:
        e["CLAUDE_CODE_MAX_RETRIES"] = str(max_retries)
    inv = Invocation([], e, prompt.encode(), str(cwd))
    cfg = {"mcpServers": {mcp.name: {"type": "stdio", "command": mcp.command, "args": mcp.args, "env": mcp.env}}}
    cfg_path = home / "mcp.json"
    _write(inv, cfg_path, json.dumps(cfg, indent=2))
    inv.argv = [str(prefix / "bin" / "claude"), "-p", "--output-format", "stream-json", "--verbose",
                f"--mcp-config={cfg_path}", "--strict-mcp-config", "--tools=",
                f"--allowedTools=mcp__{mcp.name}__*", "--permission-mode", "dontAsk",
                "--max-turns", str(max_turns)]
    return inv


# ---- codex -------------------------------------------------------------------------------------

def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid TOML basic string


def codex_turn(prefix: Path, home: Path, cwd: Path, prompt: str, mcp: McpServer, *, base_url: str | None,
               api_key: str | None, env: dict[str, str] | None = None, model: str = "scripted-model",
               startup_timeout_sec: int = 30, retries: int | None = None) -> Invocation:
    """codex exec --json, prompt on stdin ('-'), CODEX_HOME/config.toml with the one MCP server required."""
    e = _base_env(home, prefix, env)
    codex_home = home / "codex"
    e["CODEX_HOME"] = str(codex_home)
    lines = [f"model = {_toml_str(model)}"]
    if base_url:
        lines += ['model_provider = "scripted"']
    lines += ['web_search = "disabled"', "",
              "[features]", "shell_tool = false", "unified_exec = false", "view_image = false",
              "goals = false", "image_generation = false", "apps = false", "",
              "[agents]", "enabled = false", ""]
    if base_url:
        lines += ["[model_providers.scripted]", 'name = "scripted"', f"base_url = {_toml_str(base_url + '/v1')}",
                  'wire_api = "responses"', 'env_key = "CHATBOX_MODEL_API_KEY"']
        if retries is not None:
            lines += [f"request_max_retries = {retries}", f"stream_max_retries = {retries}"]
        lines.append("")
        if api_key:
            e["CHATBOX_MODEL_API_KEY"] = api_key
    elif api_key:
        e["CODEX_API_KEY"] = api_key
    lines += [f"[mcp_servers.{mcp.name}]", f"command = {_toml_str(mcp.command)}",
              "args = [" + ", ".join(_toml_str(a) for a in mcp.args) + "]",
              "required = true",                               # wait for it; fail the run if it can't start
              f"startup_timeout_sec = {startup_timeout_sec}",
              "env_vars = [" + ", ".join(_toml_str(v) for v in mcp.pass_env) + "]",
              'default_tools_approval_mode = "approve"']       # else: "requires approval, but approval policy is never"
    if mcp.env:
        lines += ["", f"[mcp_servers.{mcp.name}.env]"] + [f"{k} = {_toml_str(v)}" for k, v in mcp.env.items()]
    inv = Invocation([], e, prompt.encode(), str(cwd))
    _write(inv, codex_home / "config.toml", "\n".join(lines) + "\n")
    inv.argv = [str(prefix / "bin" / "codex"), "exec", "--json", "--skip-git-repo-check",
                "--sandbox", "read-only", "-"]
    return inv


# ---- gemini ------------------------------------------------------------------------------------

def escape_at(text: str) -> str:
    """claude -p and gemini read an unescaped @path in their input as a file reference and paste the
    file into the request; a backslash before the @ stops both (the backslash stays in the text)."""
    return text.replace("@", "\\@")


def gemini_turn(prefix: Path, home: Path, cwd: Path, prompt: str, mcp: McpServer, *, base_url: str | None,
                api_key: str | None, env: dict[str, str] | None = None, model: str = "scripted-model",
                tools: list[str] = ("reply",)) -> Invocation:
    """gemini headless (prompt on stdin, no -p), GEMINI_CLI_HOME/.gemini/settings.json, tools.core = the MCP tools."""
    e = _base_env(home, prefix, env)
    e["GEMINI_CLI_HOME"] = str(home)
    if base_url:
        e["GOOGLE_GEMINI_BASE_URL"] = base_url
    if api_key:
        e["GEMINI_API_KEY"] = api_key
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "mcpServers": {mcp.name: {"command": mcp.command, "args": mcp.args, "env": mcp.env, "trust": True}},
        "tools": {"core": [f"mcp_{mcp.name}_{t}" for t in tools]},
        "privacy": {"usageStatisticsEnabled": False},
    }
    inv = Invocation([], e, prompt.encode(), str(cwd))
    _write(inv, home / ".gemini" / "settings.json", json.dumps(settings, indent=2))
    inv.argv = [str(prefix / "bin" / "gemini"), "--output-format", "stream-json", "--skip-trust", "-m", model]
    return inv


# ---- Kimi Code ---------------------------------------------------------------------------------

def kimi_turn(prefix: Path, home: Path, cwd: Path, prompt: str, mcp: McpServer, *, base_url: str | None,
              api_key: str | None, env: dict[str, str] | None = None, model: str = "scripted-model",
              provider_type: str = "kimi") -> Invocation:
    """kimi -p PROMPT (the prompt IS on argv: keep message text out of it), KIMI_CODE_HOME with mcp.json
    and config.toml restricting tools to the MCP server's."""
    e = _base_env(home, prefix, env)
    kimi_home = home / "kimi"
    e.update({"KIMI_CODE_HOME": str(kimi_home), "KIMI_CODE_NO_AUTO_UPDATE": "1", "KIMI_DISABLE_TELEMETRY": "1"})
    if api_key:
        e.update({"KIMI_MODEL_NAME": model, "KIMI_MODEL_API_KEY": api_key, "KIMI_MODEL_PROVIDER_TYPE": provider_type})
        if base_url:
            e["KIMI_MODEL_BASE_URL"] = base_url + ("/v1" if provider_type in ("kimi", "openai") else "")
    inv = Invocation([], e, b"", str(cwd))
    _write(inv, kimi_home / "mcp.json", json.dumps(
        {"mcpServers": {mcp.name: {"command": mcp.command, "args": mcp.args, "env": mcp.env,
                                   "startupTimeoutMs": 30000}}}, indent=2))
    _write(inv, kimi_home / "config.toml",
           f'[tools]\nenabled = ["mcp__{mcp.name}__*"]\n\n[background]\nprint_background_mode = "exit"\n')
    inv.argv = [str(prefix / "bin" / "kimi"), "-p", prompt, "--output-format", "stream-json"]
    return inv


BUILDERS = {"claude": claude_turn, "codex": codex_turn, "gemini": gemini_turn, "kimi": kimi_turn}


def run(inv: Invocation, timeout: float = 120.0) -> Result:
    """Run with stdin fed and closed, stdout/stderr captured, killed (whole group) after `timeout`."""
    t0 = time.monotonic()
    p = subprocess.Popen(inv.argv, env=inv.env, cwd=inv.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True, close_fds=True)
    try:
        out, err = p.communicate(inv.stdin, timeout=timeout)
        rc: int | None = p.returncode
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        rc = None
    return Result(rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.monotonic() - t0)


def install(prefix: Path = DEFAULT_PREFIX, timeout: float = 900.0) -> tuple[bool, str]:
    """Run the pinned installer (a no-op when already done). (ok, output or reason)."""
    try:
        p = subprocess.run(["bash", str(INSTALLER), str(prefix)], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"installer did not finish: {exc}"
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        return False, f"installer exit {p.returncode}: " + " | ".join(tail)
    return True, p.stdout


def installed_versions(prefix: Path = DEFAULT_PREFIX) -> dict[str, str]:
    """{'claude': '2.1.332 (Claude Code)', ...} from the installer's stamp file."""
    stamp = prefix / ".installed"
    out: dict[str, str] = {}
    if stamp.exists():
        for line in stamp.read_text().splitlines()[1:]:
            name, _, ver = line.partition(" ")
            out[name] = ver
    return out
