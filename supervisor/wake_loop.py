"""The wake loop of one supervisor: wait for a wake, claim, run one capped turn, report.

It subscribes to its agent's wakes first, then says Hello (so a wake lost to a slow join costs
nothing: the Hello answer says whether work is pending), then blocks in ``poll()`` on the SUB
socket, a monitor of that socket (a reconnect after a broker restart means: say Hello again)
and the stop-signal descriptor. A wake leads to a Claim, a claimed batch to one capped turn, the
turn to a TurnReport retried until the broker has it. Nothing here runs on a timer.

Retries: a Hello, a Claim and a TurnReport each keep one idempotency key and are sent again
while the broker is away (``Unreachable``) or refuses for a reason that may pass (``Transient``,
e.g. a commit that failed on a full disk), with capped exponential backoff (tenacity) — until
the broker has it or a stop deadline passes. A final refusal is not retried. ``Unauthorized``
(the agent was revoked) ends the loop: the supervisor exits with one line.

Stopping: the first INT/TERM lets the running turn finish (or hit its caps), reports it — retried
for ``STOP_REPORT_SECONDS`` at most — and ends the loop; a second one kills the turn and raises
``Aborted`` at once (the broker then records the turn lost and redelivers its batch).
"""

from __future__ import annotations

import os
import select
import socket
import time
import uuid

import structlog
import tenacity
import zmq
import zmq.utils.monitor

from chatbox.bus import wire
from chatbox.bus.client import BusClient, new_key
from chatbox.bus.errors import Refused, Transient, Unauthorized, Unreachable
from chatbox.runtime.signals import StopSignals
from chatbox.supervisor.turn import TurnRunner

# once a stop is asked for, a report is retried this long at most: well below the
# TimeoutStopSec of deploy/supervisor@.service, which also allows one whole turn
STOP_REPORT_SECONDS = 30.0
# one bounded call of the retry loop, so a stop signal is seen within about this long
REPORT_SLICE_SECONDS = 1.0
# the backoff between two sends of one request: exponential, capped
RETRY_FIRST_SECONDS = 0.05
RETRY_MAX_SECONDS = 1.0

log = structlog.get_logger("supervisor")


class Aborted(Exception):
    """A second stop signal: the loop ends at once."""


class WakeLoop:
    def __init__(self, agent: str, client: BusClient, runner: TurnRunner, signals: StopSignals):
        self.agent = agent
        self.client = client
        self.runner = runner
        self.id = f"{agent}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.pending_epoch: int | None = None
        self.claimed_epoch = -1
        self.signals = signals
        self._stop_deadline: float | None = None

    @property
    def stopping(self) -> bool:
        return self.signals.stopping

    # ------------------------------------------------------------------ bus
    def hello(self) -> None:
        res = self.call(wire.Hello(agent=self.agent, supervisor=self.id, pid=os.getpid(),
                                   host=socket.gethostname()), "hello", retry=(Transient,))
        if res is None:
            return
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
            res = self.call(wire.Claim(agent=self.agent, supervisor=self.id, epoch=epoch),
                            f"the claim of epoch {epoch}")
        except Unauthorized:
            raise
        except Refused as exc:
            log.info("claim_refused", epoch=epoch, reason=exc.message)
            return
        if res is None:
            return
        if res.turn is None:
            log.debug("claim_empty", epoch=epoch)
            return
        self.claimed_epoch = res.epoch
        report = self.runner.run(res.turn, res.epoch, res.messages, self.id,
                                 cancel_fd=self.signals.fileno(), is_cancelled=lambda: self.signals.now)
        if self.signals.now:
            raise Aborted(f"stopped at once during turn {res.turn}; it is recorded lost")
        try:
            result = self.send_report(report)
        except Unauthorized:
            raise
        except Refused as exc:
            log.warning("report_refused", turn=res.turn, reason=exc.message)
            return
        if result is not None and result.state == "WAKING":
            self.pending_epoch = result.epoch

    def send_report(self, report: wire.TurnReport) -> wire.Result | None:
        """Retried with one idempotency key until the broker has it, so a broker restart or a
        full disk loses nothing — but once a stop is asked for, only for
        ``STOP_REPORT_SECONDS`` more (below the unit's stop timeout); a second stop signal ends
        it at once. ``None``: given up (the broker records the turn lost)."""
        return self.call(report, f"turn {report.turn}")

    def call(self, req: wire.Request, what: str,
             retry: tuple[type[Exception], ...] = (Unreachable, Transient)) -> wire.Result | None:
        """``req`` with one idempotency key, sent again on ``retry`` errors with capped
        exponential backoff until it lands; ``None`` once a stop deadline passed. A final
        refusal raises; a second stop signal raises ``Aborted``."""
        idem = new_key() if wire.keyed(req) else None
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retry), stop=self._give_up(what),
            wait=tenacity.wait_exponential(multiplier=RETRY_FIRST_SECONDS, max=RETRY_MAX_SECONDS),
            sleep=self._sleep, before_sleep=self._log_retry(what), reraise=True)
        try:
            return retrying(self.client.call, req, idem=idem, deadline=REPORT_SLICE_SECONDS)
        except retry as exc:
            log.error("request_abandoned", what=what, error=str(exc),
                      hint="the broker records an unreported turn lost and redelivers its batch")
            return None

    def _give_up(self, what: str):
        def stop(state: tenacity.RetryCallState) -> bool:
            if self.signals.now:
                raise Aborted(f"stopped at once; {what} is left unsent")
            if self.stopping and self._stop_deadline is None:
                self._stop_deadline = time.monotonic() + STOP_REPORT_SECONDS
            return self._stop_deadline is not None and time.monotonic() >= self._stop_deadline
        return stop

    @staticmethod
    def _log_retry(what: str):
        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception()
            # an Unreachable broker is logged by serve(); a transient refusal once in a while
            if isinstance(exc, Transient) and state.attempt_number % 30 == 1:
                log.warning("retrying", what=what, attempt=state.attempt_number, code=exc.code,
                            reason=exc.message)
        return before_sleep

    def _sleep(self, seconds: float) -> None:
        """The backoff, cut short by a second stop signal."""
        end = time.monotonic() + seconds
        fd = self.signals.fileno()
        while not self.signals.now and (left := end - time.monotonic()) > 0:
            if select.select([fd], [], [], left)[0]:
                self.signals.drain()

    # ------------------------------------------------------------------ loop
    def serve(self) -> None:
        sub = self.client.sub_socket
        monitor = sub.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        poller.register(self.signals.fileno(), zmq.POLLIN)
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
        if self.signals.fileno() in ready:
            self.signals.drain()
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
