"""Real processes for the tests, the benchmarks and ``chatbox demo``: one harness, three users.

A :class:`Process` is started with its stdout and stderr going to a log file (the child keeps
its own descriptor, so the file survives the child and can be read after a crash), in its own
session, so :meth:`Process.kill` ends its whole process group. Its readiness handshake is the
one the CLI contract names (DESIGN §6): the JSON log line whose ``event`` is ``"ready"``.

Every wait is bounded and fails with :class:`Timeout` (or :class:`Exited`, as soon as the
process has died without logging what was awaited):

- :meth:`Process.wait_log` — a log line. A log file offers nothing to block on, so this is the
  one poll of the harness: it reads only what was appended since the last read, starting at
  5 ms between reads and backing off to 50 ms.
- :func:`wait_event` — a bus event, blocking in the client's ``recv_event`` until the deadline.
- :func:`wait_for` — a predicate over state that has no event of its own (a row over the bus).

Nothing here knows a workspace's layout beyond ``CHATBOX_WORKSPACE``: the fleet of the tests,
the benchmark's broker and the demo build on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.runtime import env as runtime_env

READY = "ready"


class HarnessError(RuntimeError):
    """A process of the harness did not do what was awaited."""


class Timeout(HarnessError):
    """A bounded wait ran out."""


class Quiet(Timeout):
    """No bus event came for the idle time a wait allowed."""


class Exited(HarnessError):
    """The process ended before it logged what was awaited."""


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; :class:`Timeout` after ``timeout``
    seconds. For state with no event of its own; prefer :func:`wait_event` where there is one."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, left))


def events(client: BusClient, timeout: float, idle: float | None = None) -> Iterator[wire.Event]:
    """The events ``client`` receives, each as it arrives, until ``timeout`` seconds have passed
    (then :class:`Timeout`) or, with ``idle``, none has come for ``idle`` seconds (then
    :class:`Quiet`). The caller stops iterating when it has seen what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Timeout(f"no awaited bus event within {timeout:g}s")
        quiet = idle is not None and idle < left
        got = client.recv_event(idle if quiet else left)
        if got is None:
            if quiet:
                raise Quiet(f"no bus event for {idle:g}s")
            raise Timeout(f"no awaited bus event within {timeout:g}s")
        yield got[1]


def wait_event(client: BusClient, predicate: Callable[[wire.Event], object],
               timeout: float = 10.0, what: str = "a bus event",
               seen: Callable[[wire.Event], None] | None = None) -> wire.Event:
    """Block on ``client``'s subscriptions until an event satisfies ``predicate``; return it.
    ``seen`` is called with every event received meanwhile, that one included."""
    try:
        for event in events(client, timeout):
            if seen is not None:
                seen(event)
            if predicate(event):
                return event
    except Timeout:
        raise Timeout(f"timed out after {timeout:g}s waiting for {what}") from None
    raise AssertionError("unreachable")  # events() only ends by raising


def short_tempdir(prefix: str = "cbx") -> Path:
    """A temporary directory with a short path (ipc socket paths are limited to ~100 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if os.path.isdir("/tmp") else None))


def child_env(workspace: Path | str | None, base: Mapping[str, str] | None = None,
              **extra: str) -> dict[str, str]:
    """``base`` (default: this process's environment) without any ``CHATBOX_*`` variable, the
    workspace named by ``CHATBOX_WORKSPACE``, then ``extra`` laid over it."""
    out = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith("CHATBOX_")}
    if workspace is not None:
        out[runtime_env.WORKSPACE] = str(workspace)
    out.update(extra)
    return out


class Process:
    """A child process whose output goes to ``log_path``, killed as a group at the end."""

    def __init__(self, name: str, argv: list[str], *, log_path: Path, cwd: Path | str,
                 env: Mapping[str, str]):
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._offset = 0
        self._partial = b""
        self._events: list[dict] = []
        with open(log_path, "ab") as log:  # the child keeps its own descriptor
            self.popen = subprocess.Popen(self.argv, cwd=cwd, env=dict(env),
                                          stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_events(self) -> list[dict]:
        """Every JSON log line written so far, in order (other lines skipped)."""
        with open(self.log_path, "rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self._events.append(event)
        return list(self._events)

    def wait_log(self, event: str, timeout: float = 15.0, count: int = 1,
                 **match: object) -> dict:
        """The ``count``-th log line of ``event`` whose fields equal ``match``; :class:`Exited`
        if the process ends first, :class:`Timeout` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        interval = 0.005
        while True:
            ended = self.popen.poll() is not None  # read the log after: its last lines count
            hits = [e for e in self.log_events() if e.get("event") == event
                    and all(e.get(k) == v for k, v in match.items())]
            if len(hits) >= count:
                return hits[count - 1]
            wanted = f"{event!r} {match or ''}".strip()
            if ended:
                raise Exited(f"{self.name} exited with {self.popen.returncode} before logging "
                             f"{wanted}:\n{self.log_text()[-3000:]}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(f"timed out after {timeout:g}s waiting for {self.name} to log "
                              f"{wanted}:\n{self.log_text()[-3000:]}")
            time.sleep(min(interval, left))
            interval = min(interval * 2, 0.05)

    def wait_ready(self, timeout: float = 20.0) -> dict:
        """The readiness handshake: the "ready" log line (DESIGN §6)."""
        return self.wait_log(READY, timeout)

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int | None:
        """``sig`` (graceful), then SIGKILL of the group if it has not exited within ``timeout``."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def kill(self) -> None:
        """SIGKILL of the whole process group: no clean-up, what a crash leaves behind."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.popen.wait(5)


def spawn(name: str, argv: list[str], *, log_dir: Path, cwd: Path | str,
          env: Mapping[str, str], ready_timeout: float | None = 20.0) -> Process:
    """Start ``argv`` with its log in ``log_dir/NAME.log``; unless ``ready_timeout`` is None,
    wait for its "ready" line (killing it if it never comes)."""
    proc = Process(name, argv, log_path=log_dir / f"{name}.log", cwd=cwd, env=env)
    if ready_timeout is not None:
        try:
            proc.wait_ready(ready_timeout)
        except HarnessError:
            proc.kill()
            raise
    return proc
