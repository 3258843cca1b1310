"""Engine command builders, the CLI homes ChatBox writes, and what a turn's output says
(DESIGN §6 Engines; the facts behind each flag: docs/ENGINES.md, measured with the real CLIs)."""

from __future__ import annotations

import json
import os
import sys
import tomllib
import typing
from pathlib import Path

import pytest

from chatbox.runtime.config import Behaviour, Engine
from chatbox.supervisor import cli_homes, engine_output, engines
from chatbox.supervisor.errors import EngineError

RELAY = [sys.executable, "-I", "-S", "/x/mcp_relay.py", "/ws/.chatbox/agents/kimi/mcp.sock",
         "--turn", "7"]
PROMPT = "hello @kimi, see @.chatbox/token"
POINTER = "You have 1 new message (#5); read it with inbox"


def build(engine: str, home: Path | None = None, **kw):
    inp = engines.TurnInput(agent="kimi", prompt=PROMPT, pointer=POINTER,
                            batch_json=b'{"messages":[]}', workspace="/ws", mcp=RELAY, home=home,
                            **kw)
    return engines.build_turn(engine, inp)


def test_the_engines_and_stub_behaviours_are_those_the_config_accepts():
    """Issue 12 item 4: config.Engine and config.Behaviour are the one list of each."""
    assert set(engines.ENGINES) == set(typing.get_args(Engine))
    assert set(engines.STUB_BEHAVIOURS) == set(typing.get_args(Behaviour))


def test_stub_runs_this_python_with_the_batch_on_stdin():
    turn = build("stub", stub={"behaviour": "hang", "delay": 1.5})
    stub = str(Path(engines.__file__).resolve().parent / "stub.py")
    assert turn.argv == [sys.executable, "-I", "-S", stub, "--behaviour", "hang", "--delay", "1.5"]
    assert (turn.stdin, turn.env, turn.reply_mode) == (b'{"messages":[]}', {}, "stdout")
    with pytest.raises(EngineError, match="dance"):
        build("stub", stub={"behaviour": "dance"})


def test_command_substitutes_placeholders_per_element_without_a_shell():
    turn = build("command", command=["my-agent", "--name={agent}", "{workspace}/x", "a b; rm -rf /"],
                 reply=False)
    assert turn.argv == ["my-agent", "--name=kimi", "/ws/x", "a b; rm -rf /"]
    assert (turn.stdin, turn.reply_mode) == (PROMPT.encode(), "tools")
    assert build("command", command=["x"]).reply_mode == "stdout"
    with pytest.raises(EngineError, match="command"):
        build("command", command=[])


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini", "kimi"])
def test_no_message_text_is_ever_on_a_command_line(engine, tmp_path):
    """/proc/PID/cmdline is world-readable: the prompt goes on stdin or stays out entirely."""
    turn = build(engine, tmp_path)
    assert not any("hello" in a or "@kimi" in a or "token" in a for a in turn.argv)
    assert not any(a in turn.env.values() for a in ("sk-secret",))
    if engine == "kimi":
        assert turn.argv[turn.argv.index("-p") + 1] == POINTER and turn.stdin == b""
    else:
        assert b"hello" in turn.stdin


@pytest.mark.parametrize("engine", ["claude", "gemini"])
def test_at_references_are_escaped_for_the_clis_that_expand_them(engine, tmp_path):
    """claude and gemini paste the file named by @path into the request: never for our text."""
    stdin = build(engine, tmp_path).stdin.decode()
    assert "\\@kimi" in stdin and "\\@.chatbox/token" in stdin
    assert "@" not in stdin.replace("\\@", "")


def test_claude_registers_only_the_chatbox_server_and_waits_for_it(tmp_path):
    turn = build("claude", tmp_path, model="opus", api_key="sk-secret", base_url="http://127.0.0.1:9")
    argv = turn.argv
    assert argv[:2] == ["claude", "-p"] and "--strict-mcp-config" in argv and "--tools=" in argv
    config = Path(next(a for a in argv if a.startswith("--mcp-config="))[len("--mcp-config="):])
    assert config.parent == tmp_path / "claude" and (config.stat().st_mode & 0o777) == 0o600
    assert json.loads(config.read_text()) == {"mcpServers": {"chatbox": {
        "type": "stdio", "command": RELAY[0], "args": RELAY[1:]}}}
    assert "--allowedTools=mcp__chatbox__*" in argv
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert argv[argv.index("--model") + 1] == "opus"
    assert turn.env["MCP_TIMEOUT"] == "30000"
    assert turn.env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "claude")
    assert turn.env["ANTHROPIC_API_KEY"] == "sk-secret"  # the environment, never argv
    assert turn.env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert (tmp_path / "tmp").is_dir() and (tmp_path.stat().st_mode & 0o777) == 0o700


def test_claude_opens_a_built_in_tool_only_when_the_config_says_so(tmp_path):
    argv = build("claude", tmp_path, tools=["Read"]).argv
    assert "--tools=Read" in argv and "--allowedTools=mcp__chatbox__*,Read" in argv


def test_codex_requires_the_chatbox_server_and_turns_its_shell_off(tmp_path):
    turn = build("codex", tmp_path, model="gpt-x", base_url="http://127.0.0.1:9", api_key="k")
    assert turn.argv == ["codex", "exec", "--json", "--skip-git-repo-check", "--sandbox",
                         "read-only", "-"]
    config = tomllib.loads((tmp_path / "codex" / "config.toml").read_text())
    server = config["mcp_servers"]["chatbox"]
    assert (server["command"], server["args"]) == (RELAY[0], RELAY[1:])
    assert server["required"] is True and server["default_tools_approval_mode"] == "approve"
    assert server["env_vars"] == ["CHATBOX_TURN_ID", "CHATBOX_AGENT", "CHATBOX_WORKSPACE"]
    assert config["features"]["shell_tool"] is False and config["web_search"] == "disabled"
    assert config["model"] == "gpt-x" and config["model_provider"] == "chatbox"
    assert config["model_providers"]["chatbox"]["base_url"] == "http://127.0.0.1:9/v1"
    assert turn.env["CHATBOX_MODEL_API_KEY"] == "k"
    assert turn.env["CODEX_HOME"] == str(tmp_path / "codex")


def test_gemini_allow_lists_the_chatbox_tools_and_keeps_the_users_login(tmp_path):
    settings = tmp_path / "gemini" / ".gemini" / "settings.json"
    settings.parent.mkdir(parents=True)
    settings.write_text(json.dumps({"security": {"auth": {"selectedType": "oauth-personal"}},
                                    "ui": {"theme": "dark"}}))
    turn = build("gemini", tmp_path, model="gemini-x")
    assert turn.argv == ["gemini", "--output-format", "stream-json", "--skip-trust",
                         "--model", "gemini-x"]
    data = json.loads(settings.read_text())
    assert data["security"]["auth"]["selectedType"] == "oauth-personal"  # the login stays
    assert data["ui"] == {"theme": "dark"}
    assert data["mcpServers"]["chatbox"]["trust"] is True
    assert "mcp_chatbox_reply" in data["tools"]["core"] and "read_file" not in data["tools"]["core"]
    assert turn.env["GEMINI_CLI_HOME"] == str(tmp_path / "gemini")
    assert turn.env["TMPDIR"] == str(tmp_path / "tmp")


def test_kimi_enables_only_the_chatbox_tools_and_keeps_its_config(tmp_path):
    config = tmp_path / "kimi" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('default_model = "kimi-k2"\n[tools]\nenabled = ["Bash"]\n')
    turn = build("kimi", tmp_path, api_key="k", model="m", base_url="http://127.0.0.1:9")
    data = tomllib.loads(config.read_text())
    assert data["default_model"] == "kimi-k2" and data["tools"]["enabled"] == ["mcp__chatbox__*"]
    mcp = json.loads((tmp_path / "kimi" / "mcp.json").read_text())
    assert mcp["mcpServers"]["chatbox"]["args"] == RELAY[1:]
    assert turn.env["KIMI_MODEL_API_KEY"] == "k" and turn.env["KIMI_MODEL_NAME"] == "m"
    assert turn.env["KIMI_MODEL_BASE_URL"] == "http://127.0.0.1:9/v1"


def test_a_real_engine_needs_its_home_and_an_unknown_engine_is_refused():
    with pytest.raises(EngineError, match="home"):
        build("claude")
    with pytest.raises(EngineError, match="unknown engine 'gpt'.*claude"):
        build("gpt")


def test_a_broken_config_file_of_the_user_is_named_not_overwritten(tmp_path):
    config = tmp_path / "kimi" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("this is = = not toml")
    with pytest.raises(EngineError, match="config.toml is not valid TOML"):
        build("kimi", tmp_path)
    assert config.read_text() == "this is = = not toml"


def test_strip_api_keys_drops_key_variables_and_keeps_the_rest():
    env = {"HOME": "/h", "PATH": "/bin", "ANTHROPIC_API_KEY": "a", "ANTHROPIC_AUTH_TOKEN": "t",
           "OPENAI_API_KEY": "o", "GEMINI_API_KEY": "g", "KIMI_MODEL_API_KEY": "k",
           "SOME_OTHER_API_KEY": "s", "CLAUDE_CODE_OAUTH_TOKEN": "subscription"}
    assert engines.strip_api_keys(env) == {"HOME": "/h", "PATH": "/bin",
                                           "CLAUDE_CODE_OAUTH_TOKEN": "subscription"}


# ---------------------------------------------------------------------------- output

CLAUDE_NO_LOGIN = ('{"type":"system","subtype":"init","mcp_servers":[{"name":"chatbox","status":"connected"}]}\n'
                   '{"type":"result","subtype":"success","is_error":true,'
                   '"result":"Not logged in · Please run /login","usage":{"input_tokens":0,"output_tokens":0}}\n')
CLAUDE_OK = ('{"type":"system","subtype":"init","mcp_servers":[{"name":"chatbox","status":"connected"}]}\n'
             '[SandboxDebug] noise\n'
             '{"type":"result","subtype":"success","is_error":false,"result":"Sent.",'
             '"usage":{"input_tokens":240,"output_tokens":24,"cache_read_input_tokens":10},'
             '"total_cost_usd":0.0014}\n')


def test_claude_output_error_cause_usage_and_connection():
    assert engine_output.engine_error("claude", CLAUDE_NO_LOGIN)
    assert engine_output.cause("claude", CLAUDE_NO_LOGIN, "") == "Not logged in · Please run /login"
    assert not engine_output.engine_error("claude", CLAUDE_OK)
    assert engine_output.usage("claude", CLAUDE_OK) == engine_output.Usage(250, 24, 0.0014)
    assert engine_output.mcp_connected("claude", CLAUDE_OK) is True
    failed = CLAUDE_OK.replace('"status":"connected"', '"status":"failed"')
    assert engine_output.mcp_connected("claude", failed) is False
    assert engine_output.mcp_connected("codex", CLAUDE_OK) is None  # codex does not say


def test_codex_and_gemini_causes_and_usage():
    codex = ('{"type":"error","message":"Reconnecting... 1/5"}\n'
             '{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized"}}\n')
    assert engine_output.engine_error("codex", codex)
    assert engine_output.cause("codex", codex, "") == "unexpected status 401 Unauthorized"
    done = '{"type":"turn.completed","usage":{"input_tokens":240,"output_tokens":24}}'
    assert engine_output.usage("codex", done) == engine_output.Usage(240, 24, None)
    gemini = ('{"type":"result","status":"error","error":{"message":"API key not valid."},'
              '"stats":{"input_tokens":5,"output_tokens":1}}')
    assert engine_output.cause("gemini", gemini, "Warning: 256-color support not detected") == \
        "API key not valid."
    assert engine_output.usage("gemini", gemini) == engine_output.Usage(5, 1, None)


def test_a_cause_from_stderr_skips_known_noise_and_prefers_an_error_line():
    stderr = ("Warning: 256-color support not detected\n"
              "error: failed to run prompt: No model configured.\nSee log: /x/kimi-code.log\n")
    assert engine_output.cause("kimi", "", stderr) == "error: failed to run prompt: No model configured."
    assert engine_output.cause("kimi", "", "") is None


def test_kimi_usage_is_read_from_its_session_wire_file(tmp_path):
    wire_file = tmp_path / "kimi" / "sessions" / "wd_1" / "session_abc" / "agents" / "main" / "wire.jsonl"
    wire_file.parent.mkdir(parents=True)
    wire_file.write_text('{"type":"usage.record","usage":{"inputOther":120,"output":12,'
                         '"inputCacheRead":3,"inputCacheCreation":0},"usageScope":"turn"}\n' * 2)
    out = '{"role":"meta","type":"session.resume_hint","session_id":"session_abc"}'
    assert engine_output.usage("kimi", out, tmp_path) == engine_output.Usage(246, 24, None)
    assert engine_output.usage("kimi", out.replace("session_abc", "../x"), tmp_path) is None


def test_homes_are_private(tmp_path):
    cli_homes.prepare(tmp_path / "h")
    assert (os.stat(tmp_path / "h").st_mode & 0o777) == 0o700


def test_the_tools_allow_listed_for_gemini_are_the_mcp_servers_tools():
    """gemini's allow-list names every chatbox tool; it must follow the server's catalogue."""
    from chatbox.mcp.tools import TOOLS
    assert set(cli_homes.CHATBOX_TOOLS) == {t.name for t in TOOLS}
