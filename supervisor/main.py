"""``supervisor --agent NAME``: one process per agent, waking it only when the broker says so.

It subscribes to its agent's wakes first, then says Hello (so a wake lost to a slow join costs
nothing: the Hello answer says whether work is pending), then blocks in ``poll()`` on the SUB
socket, a monitor of that socket (a reconnect after a broker restart means: say Hello again)
and the signal pipe. A wake leads to a Claim, a claimed batch to one capped turn, the turn to a
TurnReport retried until the broker has it. Signal handlers only record; the loop acts: the
first INT/TERM finishes the running turn, reports and exits; a second stops the turn at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import uuid

import structlog
import zmq
import zmq.utils.monitor

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.bus.errors import BusError, Refused, Unauthorized, Unreachable
from chatbox.runtime import logs
from chatbox.runtime.config import AgentConfig, ConfigError, load
from chatbox.runtime.workspace import Workspace, WorkspaceError, add_process_args
from chatbox.guardrails.limits import Limits
from chatbox.supervisor.turn import TurnRunner

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

log = structlog.get_logger("supervisor")


class Supervisor:
    def __init__(self, agent: str, client: BusClient, runner: TurnRunner):
        self.agent = agent
        self.client = client
        self.runner = runner
        self.id = f"{agent}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pending_epoch: int | None = None
        self.claimed_epoch = -1
        self.signals = 0
        self._sig_r, self._sig_w = socket.socketpair()
        self._sig_r.setblocking(False)
        self._sig_w.setblocking(False)

    # ------------------------------------------------------------------ signals
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._sig_w.fileno())
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        if hasattr(signal, "SIGBREAK"):  # pragma: no cover - Windows
            signal.signal(signal.SIGBREAK, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals += 1

    @property
    def stopping(self) -> bool:
        return self.signals > 0

    def drain_signal_pipe(self) -> None:
        try:
            while self._sig_r.recv(4096):
                pass
        except BlockingIOError:
            pass

    # ------------------------------------------------------------------ bus
    def hello(self) -> None:
        res = self.client.call(wire.Hello(agent=self.agent, supervisor=self.id, pid=os.getpid(),
                                          host=socket.gethostname()))
        log.info("hello", state=res.state, epoch=res.epoch, paused=res.paused, pending=res.pending)
        if res.pending:
            self.pending_epoch = res.epoch

    def on_event(self, event: wire.Event) -> None:
        if isinstance(event, wire.WakeEvent) and event.agent == self.agent:
            log.debug("wake", epoch=event.epoch)
            if event.epoch > self.claimed_epoch:
                self.pending_epoch = max(event.epoch, self.pending_epoch or -1)

    def claim_and_run(self) -> None:
        epoch, self.pending_epoch = self.pending_epoch, None
        self.claimed_epoch = max(self.claimed_epoch, epoch)
        try:
            res = self.client.call(wire.Claim(agent=self.agent, supervisor=self.id, epoch=epoch))
        except Refused as exc:
            log.info("claim_refused", epoch=epoch, reason=exc.message)
            return
        if res.turn is None:
            log.debug("claim_empty", epoch=epoch)
            return
        self.claimed_epoch = res.epoch
        report = self.runner.run(res.turn, res.epoch, res.messages, self.id, cancel_fd=self._sig_r.fileno(),
                                 is_cancelled=lambda: self.signals >= 2)
        try:
            # Retried until the broker has it (same idempotency key): a restart loses nothing.
            result = self.client.call(report, deadline=24 * 3600)
        except Refused as exc:
            log.warning("report_refused", turn=res.turn, reason=exc.message)
            return
        if result.state == "WAKING":
            self.pending_epoch = result.epoch

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        sub = self.client.sub_socket
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self._sig_r.fileno(), zmq.POLLIN)
        try:
            while not self.stopping:
                try:
                    self.step(poller, sub, monitor)
                except Unreachable as exc:
                    # the broker is away: keep waiting; its return is a reconnection, and a
                    # reconnection means a fresh Hello (nothing here ever gives up on it)
                    log.warning("broker_unreachable", error=str(exc))
        finally:
            sub.disable_monitor()
            monitor.close(linger=0)

    def step(self, poller: zmq.Poller, sub: zmq.Socket, monitor: zmq.Socket) -> None:
        """One turn of the loop: claim what is pending, else block until something happens."""
        if self.pending_epoch is not None:
            self.claim_and_run()
            return
        ready = dict(poller.poll())
        if self._sig_r.fileno() in ready:
            self.drain_signal_pipe()
        if monitor in ready:
            while monitor.poll(0):
                zmq.utils.monitor.recv_monitor_message(monitor)
            # (re)connected — perhaps to a restarted broker, perhaps after wakes were
            # published to nobody: the database is the truth, so ask it again. A Hello
            # that repeats the one made at start-up changes nothing.
            log.info("connected")
            self.hello()
        if sub in ready:
            while sub.poll(0):
                _, event = self.client.read_event()
                self.on_event(event)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="supervisor",
                                description="Run one agent's supervisor (foreground).")
    p.add_argument("--agent", required=True, help="the agent this supervisor runs turns for")
    add_process_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        ws = Workspace.find(args.workspace)
        ws.require_initialised()
        config = load(ws.config_path)
        agent_cfg: AgentConfig = config.agent(args.agent)
        limits: Limits = config.limits_for(args.agent)
        token = os.environ.get("CHATBOX_TOKEN") or ws.read_token(ws.agent_token_path(args.agent))
    except (WorkspaceError, ConfigError) as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return EXIT_FAILED
    logs.configure(args.log_level or config.log.level, component="supervisor", agent=args.agent)
    client = BusClient(ws.endpoints(config.bus.request, config.bus.events), token,
                       attempt_timeout=2.0, deadline=30.0)
    runner = TurnRunner(args.agent, agent_cfg, limits, ws)
    sup = Supervisor(args.agent, client, runner)
    client.subscribe([wire.wake_topic(args.agent)])
    sup.install_signals()
    try:
        sup.hello()
    except Unauthorized as exc:
        print(f"supervisor: {args.agent}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Refused as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except Unreachable as exc:
        print(f"supervisor: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    log.info("ready", supervisor=sup.id, engine=agent_cfg.engine)
    try:
        sup.serve()
    except BusError as exc:
        log.error("bus_failed", error=str(exc))
        return EXIT_FAILED
    finally:
        client.close()
        log.info("stopped")
    return EXIT_OK
