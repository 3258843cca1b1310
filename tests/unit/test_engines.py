"""Engine command builders and engine-error detection (DESIGN §6 Engines, notes/cli-engines.md)."""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path

import pytest

from chatbox.runtime.config import Behaviour, Engine
from chatbox.supervisor import engines
from chatbox.supervisor.errors import EngineError, SupervisorError

MCP = ["/venv/bin/chatbox", "mcp", "--agent", "kimi", "--workspace", "/ws"]
# what TurnRunner.options() gives a CLI engine: only the model (nothing passes max_turns or home)
TURN_OPTIONS = {"model": "opus"}


def build(engine: str, options: dict | None = None, prompt: str = "PROMPT"):
    """build_turn with fixed arguments."""
    return engines.build_turn(engine, agent="kimi", prompt=prompt, batch_json=b'{"messages":[]}',
                              options=options or {}, workspace="/ws", mcp_command=MCP)


def test_the_engines_and_stub_behaviours_are_those_the_config_accepts():
    """Issue 12 item 4: config.Engine and config.Behaviour are the one list of each."""
    assert set(engines.ENGINES) == set(typing.get_args(Engine))
    assert set(engines.STUB_BEHAVIOURS) == set(typing.get_args(Behaviour))
    for engine in typing.get_args(Engine):  # each name has a builder
        options = {"argv": ["true"]} if engine == "command" else {}
        assert build(engine, options)[0]


def test_stub_runs_this_python_with_the_batch_on_stdin():
    """The stub is supervisor/stub.py run isolated (-I -S) by this Python; stdout is the reply."""
    argv, stdin, env, mode = build("stub", {"behaviour": "hang", "delay": 1.5})
    stub = str(Path(engines.__file__).resolve().parent / "stub.py")
    assert argv == [sys.executable, "-I", "-S", stub, "--behaviour", "hang", "--delay", "1.5"]
    assert (stdin, env, mode) == (b'{"messages":[]}', {}, "stdout")


def test_stub_refuses_an_unknown_behaviour():
    """A behaviour the stub does not know is an EngineError at build time."""
    with pytest.raises(EngineError, match="dance"):
        build("stub", {"behaviour": "dance"})


def test_command_substitutes_placeholders_per_element_without_a_shell():
    """{agent} and {workspace} are replaced inside each element; other braces stay."""
    argv, stdin, _, mode = build("command", {"argv": ["my-agent", "--name={agent}", "{workspace}/x",
                                                      '{"k": 1}', "a b; rm -rf /"]})
    assert argv == ["my-agent", "--name=kimi", "/ws/x", '{"k": 1}', "a b; rm -rf /"]
    assert (stdin, mode) == (b"PROMPT", "tools")


def test_command_with_reply_true_posts_stdout():
    """options reply = true makes the supervisor post stdout as the reply."""
    assert build("command", {"argv": ["x"], "reply": True})[3] == "stdout"


def test_command_without_argv_is_refused():
    """An empty or missing argv template is an EngineError."""
    with pytest.raises(EngineError, match="argv"):
        build("command", {"argv": []})


def test_claude_gets_print_mode_stream_json_and_only_the_chatbox_server():
    """claude -p, stream-json + --verbose, strict MCP config with chatbox only, dontAsk."""
    argv, stdin, env, mode = build("claude", TURN_OPTIONS)
    assert argv[:2] == ["claude", "-p"]
    assert argv[argv.index("--output-format") + 1] == "stream-json"
    assert "--verbose" in argv and "--strict-mcp-config" in argv
    config = json.loads(next(a for a in argv if a.startswith("--mcp-config="))[len("--mcp-config="):])
    assert config == {"mcpServers": {"chatbox": {"type": "stdio", "command": MCP[0], "args": MCP[1:]}}}
    assert "--allowedTools=mcp__chatbox__*" in argv
    assert argv[argv.index("--permission-mode") + 1] == "dontAsk"
    assert argv[argv.index("--max-turns") + 1] == str(engines.DEFAULT_MAX_TURNS)
    assert argv[argv.index("--model") + 1] == "opus"
    assert "PROMPT" not in argv
    assert (stdin, env, mode) == (b"PROMPT", {}, "tools")


def test_codex_exec_reads_the_prompt_from_stdin_and_registers_chatbox():
    """codex exec --json … - : the MCP server through -c overrides, the prompt on stdin."""
    argv, stdin, env, mode = build("codex")
    assert argv[:3] == ["codex", "exec", "--json"]
    assert "--skip-git-repo-check" in argv and argv[-1] == "-"
    assert f"mcp_servers.chatbox.command={json.dumps(MCP[0])}" in argv
    assert f"mcp_servers.chatbox.args={json.dumps(MCP[1:])}" in argv
    assert (stdin, env, mode) == (b"PROMPT", {}, "tools")


def test_gemini_headless_with_the_prompt_on_stdin():
    """gemini -p <pointer> stream-json, trusted, chatbox the only MCP server; prompt on stdin."""
    argv, stdin, env, _ = build("gemini")
    assert argv[:2] == ["gemini", "-p"] and "PROMPT" not in argv
    assert argv[argv.index("--allowed-mcp-server-names") + 1] == "chatbox"
    assert "--skip-trust" in argv
    assert (stdin, env) == (b"PROMPT", {})


def test_kimi_takes_the_prompt_as_the_p_value():
    """Kimi Code reads no stdin in print mode: the prompt is -p's value."""
    argv, stdin, env, mode = build("kimi")
    assert argv == ["kimi", "-p", "PROMPT", "--output-format", "stream-json"]
    assert stdin == b""
    assert env == {"KIMI_CODE_NO_AUTO_UPDATE": "1"}


def test_kimi_refuses_a_prompt_too_long_for_one_argument():
    """Linux caps one argv element at 128 KiB: a longer prompt is a clear EngineError."""
    with pytest.raises(EngineError, match="kimi"):
        build("kimi", prompt="x" * (engines.MAX_ARG_BYTES + 1))


def test_an_unknown_engine_is_a_clear_engine_error():
    """An engine name nobody knows is an EngineError listing the known ones."""
    with pytest.raises(EngineError, match="unknown engine 'gpt'.*claude"):
        build("gpt")
    with pytest.raises(SupervisorError):
        engines.engine_error("gpt", "")


def test_claude_error_results_are_recognised():
    """is_error true (API failure with subtype success) or an error_* subtype is an engine error."""
    init = '{"type":"system","subtype":"init","session_id":"s"}'
    ok = '{"type":"result","subtype":"success","is_error":false,"result":"Sent."}'
    api = '{"type":"result","subtype":"success","is_error":true,"result":"API Error: 529"}'
    turns = '{"type":"result","subtype":"error_max_turns","is_error":true,"errors":["max"]}'
    assert not engines.engine_error("claude", f"{init}\n{ok}\n")
    assert engines.engine_error("claude", f"{init}\n[SandboxDebug] noise\n{api}\n")
    assert engines.engine_error("claude", f"{init}\n{turns}")
    assert not engines.engine_error("claude", f"{init}\n")  # no result: a cap, not an engine error
    assert not engines.engine_error("claude", '{"type":"result","is_err')  # a cut line is skipped


def test_codex_and_gemini_error_events_are_recognised():
    """codex turn.failed / a lone error event; gemini result status error / an error event."""
    assert engines.engine_error("codex", '{"type":"thread.started"}\n{"type":"turn.failed","error":{"message":"x"}}')
    assert engines.engine_error("codex", '{"type":"error","message":"stream closed"}')
    assert not engines.engine_error("codex", '{"type":"item.completed","item":{"type":"error","message":"warn"}}\n'
                                             '{"type":"turn.completed","usage":{}}')
    assert engines.engine_error("gemini", '{"type":"result","status":"error","error":{"type":"FatalTurnLimitedError"}}')
    assert engines.engine_error("gemini", '{"type":"error","severity":"error","message":"loop"}')
    assert not engines.engine_error("gemini", '{"type":"error","severity":"warning","message":"w"}\n'
                                              '{"type":"result","status":"success"}')


def test_stub_and_command_never_report_an_engine_error():
    """stub, command (and kimi, whose errors go to stderr) have no error record on stdout."""
    bad = '{"type":"result","is_error":true}'
    assert not any(engines.engine_error(e, bad) for e in ("stub", "command", "kimi"))


def test_strip_api_keys_drops_key_variables_and_keeps_the_rest():
    """auth = subscription: every *_API_KEY and ANTHROPIC_AUTH_TOKEN goes; HOME stays."""
    env = {"HOME": "/h", "PATH": "/bin", "ANTHROPIC_API_KEY": "a", "ANTHROPIC_AUTH_TOKEN": "t",
           "OPENAI_API_KEY": "o", "GEMINI_API_KEY": "g", "GOOGLE_API_KEY": "g", "MOONSHOT_API_KEY": "m",
           "KIMI_API_KEY": "k", "CODEX_API_KEY": "c", "SOME_OTHER_API_KEY": "s",
           "CLAUDE_CODE_OAUTH_TOKEN": "subscription"}
    stripped = engines.strip_api_keys(env)
    assert stripped == {"HOME": "/h", "PATH": "/bin", "CLAUDE_CODE_OAUTH_TOKEN": "subscription"}
    assert "ANTHROPIC_API_KEY" in env  # the input is not changed
