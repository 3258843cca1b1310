"""The supervisor's side of its agent's long-lived MCP server (``chatbox mcp --listen-fd``).

The supervisor binds the 0600 socket in the agent's directory and listens itself, then starts
the server with the socket inherited: a turn's relay can connect from the first moment, and its
connection waits in the backlog while the server loads the MCP SDK. The server dies with the
supervisor (``PR_SET_PDEATHSIG``) and is started again before a turn if it has exited.

Each turn's CLI is given ``relay_command(turn)``: the stdlib relay, which starts in about 20 ms
where a fresh MCP server needs over a second (bench/mcp_start.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import structlog

from chatbox.supervisor.capped import TurnSpec, spawn_plan
from chatbox.supervisor.errors import SupervisorError

log = structlog.get_logger("supervisor")

RELAY = Path(__file__).resolve().with_name("mcp_relay.py")


class McpHub:
    def __init__(self, agent: str, socket_path: Path, server_argv: list[str], env: dict[str, str],
                 cwd: str):
        self.agent = agent
        self.path = socket_path
        self.server_argv = server_argv  # `chatbox mcp --agent A --workspace W`, without the fd
        self.env = env
        self.cwd = cwd
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Bind and listen, then start the server on the inherited socket."""
        self.path.unlink(missing_ok=True)  # a stale socket of a dead supervisor
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise SupervisorError(f"cannot bind the MCP socket {self.path}: "
                                  f"{exc.strerror or exc}") from None
        finally:
            os.umask(old)
        sock.listen(64)
        self.sock = sock
        self._spawn()

    def _spawn(self) -> None:
        assert self.sock is not None
        fd = self.sock.fileno()
        spec = TurnSpec(argv=[*self.server_argv, "--listen-fd", str(fd)], env=self.env,
                        cwd=self.cwd)
        try:
            argv, kwargs = spawn_plan(spec)
            self.proc = subprocess.Popen(argv, env=self.env, cwd=self.cwd, pass_fds=(fd,),
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         **kwargs)
        except OSError as exc:
            raise SupervisorError(f"cannot start the chatbox MCP server ({spec.argv[0]}): "
                                  f"{exc.strerror or exc}") from None
        log.info("mcp_server_started", pid=self.proc.pid, socket=str(self.path))

    def ensure(self) -> None:
        """Before a turn: the server is running (started again if it exited)."""
        if self.proc is not None and self.proc.poll() is not None:
            log.warning("mcp_server_exited", code=self.proc.returncode)
            self._spawn()

    def relay_command(self, turn: int) -> list[str]:
        return [sys.executable, "-I", "-S", str(RELAY), str(self.path), "--turn", str(turn)]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.sock is not None:
            self.sock.close()
            self.path.unlink(missing_ok=True)
