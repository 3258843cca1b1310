"""One turn, from a claimed batch to a TurnReport: prompt, command, capped run, outcome."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import structlog

from chatbox.bus import wire
from chatbox.bus.endpoints import Endpoints
from chatbox.runtime import env
from chatbox.runtime.config import AgentConfig
from chatbox.runtime.workspace import Workspace
from chatbox.guardrails.limits import Limits
from chatbox.supervisor import cli_homes, engine_output, engines, sandbox
from chatbox.supervisor.errors import EngineError, SupervisorError
from chatbox.supervisor.mcp_hub import McpHub
from chatbox.supervisor.prompt import render_pointer, render_prompt
from chatbox.supervisor.capped import TurnSpec, run_capped
from chatbox.supervisor.turn_env import allowed_env

log = structlog.get_logger("supervisor")


def server_command(agent: str, ws: Workspace) -> list[str]:
    """``chatbox mcp`` for ``agent``: the console script beside this Python."""
    chatbox = os.path.join(os.path.dirname(sys.executable), "chatbox")
    return [chatbox, "mcp", "--agent", agent, "--workspace", str(ws.root)]

# runner outcome -> turn outcome on the wire
_OUTCOMES = {"ok": "ok", "failed": "failed", "timeout": "timeout", "capped": "failed",
             "cancelled": "failed"}


class TurnRunner:
    def __init__(self, agent: str, config: AgentConfig, limits: Limits, ws: Workspace,
                 hub: McpHub | None = None, endpoints: Endpoints | None = None):
        self.agent = agent
        self.config = config
        self.limits = limits
        self.ws = ws
        self.hub = hub  # the agent's long-lived MCP server; None: each turn starts its own
        self.endpoints = endpoints or ws.endpoints()  # the bus sockets a sandboxed turn sees

    def mcp_command(self, turn: int) -> list[str]:
        """How the turn's CLI starts the chatbox MCP server: the relay to the hub, or a fresh
        ``chatbox mcp`` where there is no hub."""
        if self.hub is not None:
            self.hub.ensure()
            return self.hub.relay_command(turn)
        return server_command(self.agent, self.ws)

    @property
    def home(self) -> Path:
        """The agent's CLI home: ``home`` in chatbox.toml (relative to the workspace), or its own
        directory under the data directory."""
        if self.config.home:
            return (self.ws.root / self.config.home).resolve()
        return self.ws.agent_home(self.agent)

    def api_key(self) -> str | None:
        """``auth = "api"``: the key from the agent's key file, which must be 0600."""
        if self.config.auth != "api":
            return None
        path = (self.ws.root / self.config.secrets_file if self.config.secrets_file
                else self.ws.agent_api_key_path(self.agent))
        try:
            st = path.stat()
            if st.st_mode & 0o077:
                raise EngineError(f"the API key file {path} is readable by others; "
                                  f"`chmod 600 {path}`")
            key = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise EngineError(f'auth = "api" but there is no key file at {path}; write the '
                              "key there, one line, mode 0600") from None
        except OSError as exc:
            raise EngineError(f"cannot read the API key file {path}: {exc.strerror}") from None
        if not key:
            raise EngineError(f"the API key file {path} is empty")
        return key

    def build(self, turn: int, messages: list[wire.Message]) -> tuple[TurnSpec, str]:
        c = self.config
        real = c.engine in engines.COMMANDS
        inp = engines.TurnInput(
            agent=self.agent, workspace=str(self.ws.root),
            prompt=render_prompt(self.agent, messages,
                                 redelivered={m.seq for m in messages if m.redelivered}),
            pointer=render_pointer(self.agent, messages),
            batch_json=msgspec.json.encode({"agent": self.agent, "turn": turn,
                                            "messages": messages}),
            mcp=self.mcp_command(turn) if c.engine != "stub" else [],
            home=self.home if real else None, model=c.model, base_url=c.base_url,
            api_key=self.api_key() if real else None, tools=list(c.tools),
            max_turns=c.max_turns, stub={"behaviour": c.stub.behaviour, "delay": c.stub.delay},
            command=list(c.command), reply=c.reply)
        built = engines.build_turn(c.engine, inp)
        child_env = allowed_env(os.environ, {
            **built.env, **env.for_turn(turn, self.agent, str(self.ws.root))}, c.env)
        if c.auth == "subscription":
            child_env = engines.strip_api_keys(child_env)
        argv = built.argv
        if c.sandbox == "bwrap":
            cli_homes.prepare(self.home)
            # the system outside is read-only in the sandbox: home and scratch are the agent's
            child_env["HOME"], child_env["TMPDIR"] = str(self.home), str(self.home / "tmp")
            argv = sandbox.wrap(argv, ws=self.ws, agent=self.agent, endpoints=self.endpoints,
                                home=self.home, env=child_env,
                                paths=[self.ws.root / p for p in c.sandbox_paths])
        spec = TurnSpec(argv=argv, stdin=built.stdin, env=child_env, cwd=str(self.ws.root),
                        lifeline=c.sandbox == "bwrap",
                        max_seconds=self.limits.max_turn_seconds,
                        max_output_bytes=self.limits.max_output_bytes,
                        kill_grace_seconds=self.limits.kill_grace_seconds)
        return spec, built.reply_mode

    def run(self, turn: int, epoch: int, messages: list[wire.Message], supervisor: str, *,
            cancel_fd: int | None = None,
            is_cancelled: Callable[[], bool] = lambda: False) -> wire.TurnReport:
        log.info("turn_start", turn=turn, batch=[m.seq for m in messages])
        try:
            spec, reply_mode = self.build(turn, messages)
        except SupervisorError as exc:  # a misconfigured engine fails the turn, not the process
            log.error("turn_unbuildable", turn=turn, error=str(exc))
            return wire.TurnReport(agent=self.agent, supervisor=supervisor, turn=turn,
                                   epoch=epoch, outcome="failed", output=f"not started: {exc}",
                                   cause=f"not started: {exc}")
        result = run_capped(spec, cancel_fd=cancel_fd, is_cancelled=is_cancelled,
                          on_start=lambda pid: log.info("turn_spawned", turn=turn, pid=pid))
        engine = self.config.engine
        outcome = _OUTCOMES.get(result.outcome, "failed")
        reply = result.output.strip() if reply_mode == "stdout" and outcome == "ok" else None
        engine_error = engine_output.engine_error(engine, result.output)
        cause = None
        if outcome != "ok" or engine_error:
            cause = engine_output.cause(engine, result.output, result.stderr_tail)
        if outcome == "ok" and engine_output.mcp_connected(engine, result.output) is False:
            outcome, cause = "failed", "the CLI reports the chatbox MCP server did not connect"
        used = engine_output.usage(engine, result.output, self.home if engine in
                                   engines.COMMANDS else None) or engine_output.Usage()
        log.info("turn", turn=turn, outcome=outcome, runner=result.outcome,
                 exit_code=result.exit_code, seconds=round(result.ended_at - result.started_at, 3),
                 batch=len(messages), cause=cause, used=used.input_tokens + used.output_tokens)
        return wire.TurnReport(agent=self.agent, supervisor=supervisor, turn=turn, epoch=epoch,
                               outcome=outcome, exit_code=result.exit_code, digest=result.digest,
                               excerpt=result.excerpt, output=result.output[:65536],
                               reply=reply or None, engine_error=engine_error, cause=cause,
                               needs_connection=engine in engines.COMMANDS,
                               input_tokens=used.input_tokens, output_tokens=used.output_tokens,
                               cost_usd=used.cost_usd)
