"""Each real agent CLI, installed by deploy/engines/install.sh at its pinned version, runs one headless
turn against the scripted model server (tests/engines/model_server.py) with a real stdio MCP server
(tests/engines/echo_mcp.py, not ChatBox) — and fails visibly without credentials or with a 401.

The installer runs once per session (a no-op when its stamp matches). Where it cannot run (no npm, no
registry) every test here is skipped with the installer's reason. CHATBOX_ENGINE_TESTS=0 skips them
outright; CHATBOX_ENGINES_PREFIX picks another install prefix.

What each test shows, per engine:
* turn: the model is offered exactly the MCP server's tools (built-ins excluded); the CLI waited for
  an MCP server that takes 3 s to start before its first model request; the tool call reached the
  server with the model's arguments and CHATBOX_TURN_ID/AGENT/WORKSPACE passed through from the
  CLI's environment; an ``@file`` in the prompt is not expanded (escaped where the CLI expands it);
  the CLI reports usage; exit 0.
* 401: exit code and the CLI's own error text.
* no credentials: exit code and error text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engines import cli
from tests.engines.conftest import need
from tests.engines.model_server import USAGE_IN, USAGE_OUT, ModelServer

SECRET = "SECRET-IN-WORKSPACE-1f3a"
TURN_ENV = {"CHATBOX_TURN_ID": "turn-42", "CHATBOX_AGENT": "bot"}
MCP_DELAY = "3"     # seconds the echo MCP server sleeps before serving: the CLI must wait for it
TIMEOUT = 150       # wall-clock bound per CLI run


@pytest.fixture
def prefix(engines_prefix: Path) -> Path:
    """The pinned CLIs, installed once per run (tests/engines/conftest.py)."""
    return engines_prefix


def _need(prefix: Path, engine: str) -> None:
    need(prefix, engine)


def _dirs(tmp_path: Path) -> tuple[Path, Path]:
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir(mode=0o700)
    ws.mkdir()
    (ws / "secret.txt").write_text(SECRET + "\n")
    return home, ws


def _prompt(engine: str) -> str:
    text = "You have new chatbox messages. Handle them with the chatbox tools. (see @secret.txt)"
    if engine == "kimi":   # argv is world-readable: no message text on it (here: a fixed prompt)
        return "You have new chatbox messages. Handle them with the chatbox tools."
    if engine in ("claude", "gemini"):   # both paste @file contents into the request otherwise
        return cli.escape_at(text)
    return text  # codex does not expand @


def _echo_lines(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def _explain(r: cli.Result, srv: ModelServer) -> str:
    reqs = [(q["path"], q["answer"], q["tools"]) for q in srv.requests]
    return f"rc={r.rc} ({r.seconds:.1f}s)\nSTDOUT:\n{r.stdout[-3000:]}\nSTDERR:\n{r.stderr[-2000:]}\nREQUESTS: {reqs}"


EXPECTED_TOOLS = {
    "claude": {"mcp__chatbox__reply", "DeferredToolPlaceholder"},
    # codex keeps its MCP-resource helpers and request_user_input; shell, web search, images,
    # sub-agents and goals are switched off in config.toml
    "codex": {"mcp__chatbox__reply", "list_mcp_resources", "list_mcp_resource_templates",
              "read_mcp_resource", "request_user_input"},
    "gemini": {"mcp_chatbox_reply"},
    "kimi": {"mcp__chatbox__reply"},
}


def _usage(engine: str, r: cli.Result, home: Path) -> dict:
    ev = r.events()
    if engine == "claude":
        res = [e for e in ev if e.get("type") == "result"][-1]
        return {"in": res["usage"]["input_tokens"], "out": res["usage"]["output_tokens"],
                "usd": res["total_cost_usd"]}
    if engine == "codex":
        u = [e for e in ev if e.get("type") == "turn.completed"][-1]["usage"]
        return {"in": u["input_tokens"], "out": u["output_tokens"]}
    if engine == "gemini":
        s = [e for e in ev if e.get("type") == "result"][-1]["stats"]
        return {"in": s["input_tokens"], "out": s["output_tokens"]}
    # Kimi Code prints no usage; its session wire log holds usage.record lines
    sid = [e for e in ev if e.get("type") == "session.resume_hint"][-1]["session_id"]
    wires = list((home / "kimi" / "sessions").glob(f"*/{sid}/agents/main/wire.jsonl"))
    assert wires, f"no wire.jsonl for {sid}"
    recs = [json.loads(line) for line in wires[0].read_text().splitlines() if '"usage.record"' in line]
    return {"in": sum(x["usage"]["inputOther"] + x["usage"]["inputCacheRead"] + x["usage"]["inputCacheCreation"]
                      for x in recs),
            "out": sum(x["usage"]["output"] for x in recs)}


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini", "kimi"])
def test_one_turn_reaches_the_mcp_tool(engine: str, prefix: Path, tmp_path: Path) -> None:
    _need(prefix, engine)
    home, ws = _dirs(tmp_path)
    log = tmp_path / "echo.jsonl"
    mcp = cli.McpServer(env={"ECHO_MCP_LOG": str(log), "ECHO_MCP_DELAY": MCP_DELAY})
    env = {**TURN_ENV, "CHATBOX_WORKSPACE": str(ws)}
    with ModelServer(post_id=4242, body=f"hello from {engine}") as srv:
        inv = cli.BUILDERS[engine](prefix, home, ws, _prompt(engine), mcp, base_url=srv.url,
                                   api_key="sk-test-not-a-real-key", env=env)
        r = cli.run(inv, TIMEOUT)
    why = _explain(r, srv)
    assert r.rc == 0, why

    calls = [x for x in _echo_lines(log) if x.get("tool") == "reply"]
    assert len(calls) == 1, why
    assert calls[0]["post_id"] == 4242 and calls[0]["body"] == f"hello from {engine}", calls
    assert calls[0]["env"] == env, calls[0]["env"]          # passed through to the MCP server

    asked = srv.model_requests()
    tool_calls = srv.tool_calls()
    assert len(tool_calls) == 1, why
    # the first request that offered tools already had the (slow) MCP server's tool: the CLI waited
    first_with_tools = next(q for q in asked if q["tools"])
    assert any(n.endswith("reply") for n in first_with_tools["tools"]), why
    assert set(tool_calls[0]["tools"]) == EXPECTED_TOOLS[engine], tool_calls[0]["tools"]
    assert [q for q in asked if q["answer"] == "final"], why
    for q in srv.requests:
        assert SECRET not in json.dumps(q["body"]), f"@secret.txt was expanded into {q['path']}"
        assert all(v == "<redacted>" for k, v in q["headers"].items()
                   if k in ("authorization", "x-api-key", "x-goog-api-key"))

    usage = _usage(engine, r, home)
    n_answers = len([q for q in asked if q["answer"] in ("tool_call", "final", "text")])
    assert usage["in"] == USAGE_IN * n_answers and usage["out"] == USAGE_OUT * n_answers, (usage, n_answers)
    print(f"{engine}: rc 0 in {r.seconds:.1f}s, tools offered {tool_calls[0]['tools']}, usage {usage}")


# exit code and the substring of the CLI's own error text that a driver should surface
UNAUTHORIZED = {
    "claude": (1, "stdout", "Invalid API key · Fix external API key"),
    "codex": (1, "stdout", "unexpected status 401 Unauthorized: Incorrect API key provided."),
    "gemini": (145, "stdout", "API key not valid. Please pass a valid API key."),
    "kimi": (1, "stderr", "error: failed to run prompt: provider.auth_error: 401 Incorrect API key provided."),
}


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini", "kimi"])
def test_401_is_a_visible_failure(engine: str, prefix: Path, tmp_path: Path) -> None:
    _need(prefix, engine)
    home, ws = _dirs(tmp_path)
    mcp = cli.McpServer(env={"ECHO_MCP_LOG": str(tmp_path / "echo.jsonl")})
    kw: dict = {}
    if engine == "claude":
        kw["max_retries"] = 0      # default: 10 retries with backoff, minutes
    if engine == "codex":
        kw["retries"] = 0          # default: 5 retries, ~7 s
    with ModelServer(mode="unauthorized") as srv:
        inv = cli.BUILDERS[engine](prefix, home, ws, _prompt(engine), mcp, base_url=srv.url,
                                   api_key="sk-bad-key", **kw)
        r = cli.run(inv, TIMEOUT)
    rc, stream, text = UNAUTHORIZED[engine]
    why = _explain(r, srv)
    assert r.rc == rc, why
    assert text in (r.stdout if stream == "stdout" else r.stderr), why
    assert any(q["answer"] == "401" for q in srv.requests), why
    if engine == "claude":
        res = [e for e in r.events() if e.get("type") == "result"][-1]
        assert res["is_error"] is True and res["api_error_status"] == 401, res
    if engine == "codex":
        assert [e for e in r.events() if e.get("type") == "turn.failed"], why
    if engine == "gemini":
        res = [e for e in r.events() if e.get("type") == "result"][-1]
        assert res["status"] == "error", res
    print(f"{engine} 401: rc {r.rc} in {r.seconds:.1f}s: {text}")


NO_CREDENTIALS = {
    "claude": (1, "stdout", "Not logged in · Please run /login"),
    # no key for the configured provider's env_key (with a real OpenAI login missing, codex sends no
    # Authorization header and the provider's 401 is the test above)
    "codex": (1, "stdout", "Missing environment variable: `CHATBOX_MODEL_API_KEY`."),
    "gemini": (41, "stderr", "When using Gemini API, you must specify the GEMINI_API_KEY environment variable."),
    "kimi": (1, "stderr", "error: failed to run prompt: No model configured. Run `kimi` and use /login to sign in"),
}


@pytest.mark.parametrize("engine", ["claude", "codex", "gemini", "kimi"])
def test_no_credentials_is_a_visible_failure(engine: str, prefix: Path, tmp_path: Path) -> None:
    _need(prefix, engine)
    home, ws = _dirs(tmp_path)
    mcp = cli.McpServer(env={"ECHO_MCP_LOG": str(tmp_path / "echo.jsonl")})
    with ModelServer() as srv:
        inv = cli.BUILDERS[engine](prefix, home, ws, _prompt(engine), mcp, base_url=srv.url, api_key=None)
        r = cli.run(inv, TIMEOUT)
    rc, stream, text = NO_CREDENTIALS[engine]
    why = _explain(r, srv)
    assert r.rc == rc, why
    assert text in (r.stdout if stream == "stdout" else r.stderr), why
    assert not srv.tool_calls(), why
    print(f"{engine} no credentials: rc {r.rc} in {r.seconds:.1f}s: {text}")
