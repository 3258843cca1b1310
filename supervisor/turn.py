"""One turn, from a claimed batch to a TurnReport: prompt, command, capped run, outcome."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import msgspec
import structlog

from chatbox.bus import wire
from chatbox.runtime import env
from chatbox.runtime.config import AgentConfig
from chatbox.runtime.workspace import Workspace
from chatbox.guardrails.limits import Limits
from chatbox.supervisor import engines
from chatbox.supervisor.errors import SupervisorError
from chatbox.supervisor.mcp_hub import McpHub
from chatbox.supervisor.prompt import render_prompt
from chatbox.supervisor.capped import TurnSpec, allowed_env, run_capped

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
                 hub: McpHub | None = None):
        self.agent = agent
        self.config = config
        self.limits = limits
        self.ws = ws
        self.hub = hub  # the agent's long-lived MCP server; None: each turn starts its own

    def options(self) -> dict:
        c = self.config
        match c.engine:
            case "stub":
                return {"behaviour": c.stub.behaviour, "delay": c.stub.delay}
            case "command":
                return {"argv": list(c.command), "reply": c.reply}
            case _:
                return {"model": c.model} if c.model else {}

    def mcp_command(self, turn: int) -> list[str]:
        """How the turn's CLI starts the chatbox MCP server: the relay to the hub, or a fresh
        ``chatbox mcp`` where there is no hub."""
        if self.hub is not None:
            self.hub.ensure()
            return self.hub.relay_command(turn)
        return server_command(self.agent, self.ws)

    def build(self, turn: int, messages: list[wire.Message]) -> tuple[TurnSpec, str]:
        prompt = render_prompt(self.agent, messages,
                               redelivered={m.seq for m in messages if m.redelivered})
        batch_json = msgspec.json.encode({"agent": self.agent, "turn": turn,
                                          "messages": messages})
        argv, stdin, extra_env, reply_mode = engines.build_turn(
            self.config.engine, agent=self.agent, prompt=prompt, batch_json=batch_json,
            options=self.options(), workspace=str(self.ws.root), mcp_command=self.mcp_command(turn))
        child_env = allowed_env(os.environ, {
            **extra_env, **env.for_turn(turn, self.agent, str(self.ws.root))}, self.config.env)
        if self.config.auth == "subscription":
            child_env = engines.strip_api_keys(child_env)
        spec = TurnSpec(argv=argv, stdin=stdin, env=child_env, cwd=str(self.ws.root),
                        max_seconds=self.limits.max_turn_seconds,
                        max_output_bytes=self.limits.max_output_bytes,
                        kill_grace_seconds=self.limits.kill_grace_seconds)
        return spec, reply_mode

    def run(self, turn: int, epoch: int, messages: list[wire.Message], supervisor: str, *,
            cancel_fd: int | None = None,
            is_cancelled: Callable[[], bool] = lambda: False) -> wire.TurnReport:
        log.info("turn_start", turn=turn, batch=[m.seq for m in messages])
        try:
            spec, reply_mode = self.build(turn, messages)
        except SupervisorError as exc:  # a misconfigured engine fails the turn, not the process
            log.error("turn_unbuildable", turn=turn, error=str(exc))
            return wire.TurnReport(agent=self.agent, supervisor=supervisor, turn=turn,
                                   epoch=epoch, outcome="failed", output=f"not started: {exc}")
        result = run_capped(spec, cancel_fd=cancel_fd, is_cancelled=is_cancelled,
                          on_start=lambda pid: log.info("turn_spawned", turn=turn, pid=pid))
        outcome = _OUTCOMES.get(result.outcome, "failed")
        reply = result.output.strip() if reply_mode == "stdout" and outcome == "ok" else None
        engine_error = engines.engine_error(self.config.engine, result.output)
        log.info("turn", turn=turn, outcome=outcome, runner=result.outcome,
                 exit_code=result.exit_code, seconds=round(result.ended_at - result.started_at, 3),
                 batch=len(messages), stderr=result.stderr_tail[-300:] or None)
        return wire.TurnReport(agent=self.agent, supervisor=supervisor, turn=turn, epoch=epoch,
                               outcome=outcome, exit_code=result.exit_code, digest=result.digest,
                               excerpt=result.excerpt, output=result.output[:65536],
                               reply=reply or None, engine_error=engine_error)
