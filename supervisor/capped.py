"""Run one turn as a capped subprocess; never a shell, never an exception for a bad command.

One turn, start to end::

    Popen(argv, env=exactly spec.env, cwd, close_fds, own session = own process group,
          Linux: PR_SET_PDEATHSIG=SIGKILL)  ── spawn error ──> outcome "failed", exit_code None
      │ on_start(pid)
      ▼
    pump (one selector, no threads): stdin ─write─> child ─read─> stdout (capped), stderr (tail)
                                     cancel_fd readable + is_cancelled()  ──┐
                                     wall cap passed | stdout > cap       ──┼─> SIGTERM group,
                                                                            │   kill_grace_seconds,
                                                                            └─> SIGKILL group
      │ the child (group leader) exits: drain the pipes for LINGER_SECONDS at most
      ▼
    SIGKILL the group (grandchildren left behind die too), reap the leader -> TurnResult

A sandboxed turn gets a lifeline instead of the parent-death signal (``TurnSpec.lifeline``):
it dies with this process at any moment, with no race, and is ended by cutting it.

The leader is detected as exited with ``waitid(WNOWAIT)`` and reaped only after the final
``killpg``: while it is an unreaped zombie its pid, hence the group id, cannot be recycled, so
the last signal can never hit a stranger. A grandchild that calls ``setsid()`` itself escapes
the group; PR_SET_PDEATHSIG covers only the direct child (and fires when the *thread* that
spawned it dies, so call ``run_capped`` from a long-lived thread, as the supervisor's main loop is).
The pump relies on ``selectors`` over pipes, which is POSIX only; the Windows branches below
are the process-group parts, a Windows pump would read the pipes from threads instead.
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import msgspec

from chatbox.supervisor.sandbox_init import LIFELINE

STDERR_TAIL_BYTES = 4096
EXCERPT_CHARS = 500
LINGER_SECONDS = 0.5  # how long pipes are drained once the leader has exited
REAP_SECONDS = 5.0  # how long a SIGKILLed leader may take to die before we stop waiting
_CHUNK = 65536
_PR_SET_PDEATHSIG = 1


class TurnSpec(msgspec.Struct, kw_only=True):
    """What to run and within which caps; ``env`` is the complete environment of the child."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    stdin: bytes = b""  # written, then closed; empty: stdin is /dev/null
    max_seconds: float = 600.0
    max_output_bytes: int = 1024 * 1024
    kill_grace_seconds: float = 5.0
    # the child gets the read end of a pipe only we write (its number in LIFELINE): end-of-file
    # when the turn is finished or we die, at which the sandbox's init ends it (sandbox_init.py)
    lifeline: bool = False


class TurnResult(msgspec.Struct, kw_only=True):
    """How a turn ended. ``outcome``: ok | failed | timeout | capped | cancelled."""

    outcome: str
    exit_code: int | None  # negative: killed by that signal, as Popen reports it
    output: str  # stdout, at most max_output_bytes, decoded utf-8 with replacement
    stderr_tail: str
    digest: str  # sha256 hex of the stdout bytes kept in ``output``
    excerpt: str
    started_at: float
    ended_at: float
    pid: int | None


def run_capped(spec: TurnSpec, *, cancel_fd: int | None = None,
             is_cancelled: Callable[[], bool] = lambda: False,
             on_start: Callable[[int], None] | None = None) -> TurnResult:
    """Run ``spec`` to its end or its cap; see the module docstring for the sequence."""
    started, env = time.time(), dict(spec.env)
    lifeline = os.pipe() if spec.lifeline else None  # closed on exec but what pass_fds passes
    try:
        if not spec.argv:
            raise ValueError("the command is empty")
        argv, kwargs = spawn_plan(spec)
        if lifeline is not None:
            env[LIFELINE], kwargs["pass_fds"] = str(lifeline[0]), (lifeline[0],)
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=spec.cwd,
            close_fds=True, bufsize=0, **kwargs)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        if lifeline is not None:
            os.close(lifeline[1])
        name = spec.argv[0] if spec.argv else "(nothing)"
        return TurnResult(outcome="failed", exit_code=None, output="",
                          stderr_tail=f"cannot start {name!r}: {exc}",
                          digest=hashlib.sha256(b"").hexdigest(), excerpt="",
                          started_at=started, ended_at=time.time(), pid=None)
    finally:
        if lifeline is not None:
            os.close(lifeline[0])  # the child's end
    turn = _Turn(proc, spec, lifeline[1] if lifeline is not None else None)
    try:
        if on_start is not None:
            on_start(proc.pid)
        turn.pump(cancel_fd, is_cancelled)
    finally:
        turn.finish()  # whatever happened above, the group dies and the leader is reaped
    return turn.result(started)


# --------------------------------------------------------------------------- process group

# util-linux's setpriv sets PR_SET_PDEATHSIG and execs the turn: Popen then needs no
# preexec_fn, so it can spawn without running Python in a forked copy of the supervisor
# (measured: 0.3 ms against 2.7 ms per turn start; bench/dispatch.py).
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def spawn_plan(spec: TurnSpec) -> tuple[list[str], dict]:
    """The argv and Popen arguments: own process group, and death with the supervisor — by the
    lifeline for a sandboxed turn, whose bubblewrap a parent-death signal would kill mid-set-up,
    leaving its child waiting for it forever."""
    if spec.lifeline:
        return list(spec.argv), {"start_new_session": True}
    if _SETPRIV is None:
        return list(spec.argv), _group_kwargs()
    program = spec.argv[0]
    if os.sep not in program:  # resolve here, so a missing program is a spawn error as before
        found = shutil.which(program, path=spec.env.get("PATH", os.defpath))
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
        program = found
    elif not os.access(program, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    return ([_SETPRIV, "--pdeathsig", "KILL", "--", program, *spec.argv[1:]],
            {"start_new_session": True})


def _group_kwargs() -> dict:
    if sys.platform == "win32":  # pragma: no cover - Windows: a Job Object belongs here too
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    kwargs: dict = {"start_new_session": True}
    prctl = _prctl()
    if prctl is not None:
        kwargs["preexec_fn"] = _die_with_parent(os.getpid(), prctl)
    return kwargs


def _prctl():
    """libc's prctl on Linux, loaded in the parent (nothing is loaded after fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return None


def _die_with_parent(parent: int, prctl) -> Callable[[], None]:
    sigkill = int(signal.SIGKILL)

    def hook() -> None:
        # preexec_fn is used for this one call only: the kernel SIGKILLs the child when the
        # supervisor dies; if it died already (between fork and here), give up at once.
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(127)

    return hook


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    if sys.platform == "win32":  # pragma: no cover
        if sig == signal.SIGTERM:
            proc.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            proc.kill()
        return
    try:
        os.killpg(proc.pid, sig)  # the group id is the leader's pid (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass  # nobody left (PermissionError: macOS, group of zombies)


def _leader_exited(proc: subprocess.Popen) -> bool:
    """True once the leader has exited, without reaping it (so its group id stays reserved)."""
    if proc.returncode is not None:
        return True
    if not hasattr(os, "waitid"):  # pragma: no cover - Windows
        return proc.poll() is not None
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return True


def _pidfd(pid: int) -> int | None:
    """A descriptor that turns readable when ``pid`` exits (Linux 5.3+), else None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------- the pump

class _Turn:
    """The state of one running turn: its pipes, what they carried, and why it was stopped."""

    def __init__(self, proc: subprocess.Popen, spec: TurnSpec, lifeline: int | None):
        self.proc = proc
        self.spec = spec
        self.lifeline = lifeline  # the write end; closed at finish
        self.out = bytearray()
        self.err = bytearray()
        self.reason: str | None = None  # timeout | capped | cancelled, once stopped
        self.kill_at: float | None = None
        self.sel = selectors.DefaultSelector()
        self.pending = memoryview(spec.stdin)
        self.pidfd = _pidfd(proc.pid)
        for pipe in filter(None, (proc.stdin, proc.stdout, proc.stderr)):
            os.set_blocking(pipe.fileno(), False)
        if proc.stdin is not None:
            self.sel.register(proc.stdin, selectors.EVENT_WRITE, "stdin")
        self.sel.register(proc.stdout, selectors.EVENT_READ, "stdout")
        self.sel.register(proc.stderr, selectors.EVENT_READ, "stderr")
        if self.pidfd is not None:
            self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")

    def pump(self, cancel_fd: int | None, is_cancelled: Callable[[], bool]) -> None:
        if cancel_fd is not None:
            self.sel.register(cancel_fd, selectors.EVENT_READ, "cancel")
        now = time.monotonic()
        deadline = now + self.spec.max_seconds
        linger_until: float | None = None
        give_up_at: float | None = None
        while True:
            now = time.monotonic()
            if linger_until is None and _leader_exited(self.proc):
                linger_until = now + LINGER_SECONDS
            if linger_until is not None:
                if now >= linger_until or not self._reading():
                    return
                wake = linger_until
            else:
                if self.reason is None and now >= deadline:
                    self.stop("timeout")  # wall cap
                if self.kill_at is not None and now >= self.kill_at:
                    _signal_group(self.proc, signal.SIGKILL)  # the grace is over
                    self.kill_at, give_up_at = None, now + REAP_SECONDS
                if give_up_at is not None and now >= give_up_at:
                    return  # unkillable (D state): finish() waits once more, then lets go
                wake = min(t for t in (deadline if self.reason is None else None, self.kill_at,
                                       give_up_at) if t is not None)
                if self.pidfd is None:
                    wake = min(wake, now + 0.05)  # no pidfd: notice the exit by polling
            for key, _ in self.sel.select(max(0.0, wake - now)):
                match key.data:
                    case "stdout":
                        self.read_stdout(key.fileobj)
                    case "stderr":
                        self.read_stderr(key.fileobj)
                    case "stdin":
                        self.write_stdin()
                    case "exit":
                        self.sel.unregister(key.fileobj)
                    case "cancel":
                        if not _drain(cancel_fd):
                            self.sel.unregister(cancel_fd)  # closed: it can never fire again
                        if self.reason is None and is_cancelled():
                            self.stop("cancelled")

    def stop(self, reason: str) -> None:
        """A cap or a cancel: SIGTERM the group (a sandbox: cut its lifeline) now, SIGKILL it
        after the grace."""
        self.reason = reason
        self.close_stdin()
        if self.spec.lifeline:
            self.cut()
        else:
            _signal_group(self.proc, signal.SIGTERM)
        self.kill_at = time.monotonic() + max(0.0, self.spec.kill_grace_seconds)

    def cut(self) -> None:
        """End the sandbox: its init exits at the end-of-file, then its bubblewrap."""
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None

    def read_stdout(self, pipe) -> None:
        data = self._read(pipe)
        room = self.spec.max_output_bytes - len(self.out)
        if len(data) > room:
            self.out += data[:max(room, 0)]
            if self.reason is None:
                self.stop("capped")  # output cap; keep reading so the child never blocks
        else:
            self.out += data

    def read_stderr(self, pipe) -> None:
        self.err += self._read(pipe)
        del self.err[:-STDERR_TAIL_BYTES]

    def write_stdin(self) -> None:
        try:
            n = os.write(self.proc.stdin.fileno(), self.pending[:_CHUNK])
        except BlockingIOError:
            return
        except OSError:  # BrokenPipeError: the child does not want the rest
            n = len(self.pending)
        self.pending = self.pending[n:]
        if not self.pending:
            self.close_stdin()

    def close_stdin(self) -> None:
        stdin = self.proc.stdin
        if stdin is not None and not stdin.closed:
            self.sel.unregister(stdin)
            try:
                stdin.close()
            except OSError:
                pass

    def _read(self, pipe) -> bytes:
        try:
            data = os.read(pipe.fileno(), _CHUNK)
        except BlockingIOError:
            return b""
        if not data:  # EOF
            self.sel.unregister(pipe)
            pipe.close()
        return data

    def _reading(self) -> bool:
        return any(not p.closed for p in (self.proc.stdout, self.proc.stderr))

    def finish(self) -> None:
        """Cut the lifeline and let the sandbox end, kill what is left of the group, keep what
        it wrote, reap the leader."""
        if self.spec.lifeline:
            self.cut()
            if self.pidfd is not None:  # never SIGKILL bubblewrap mid-set-up (see spawn_plan)
                select.select([self.pidfd], [], [], REAP_SECONDS)
        self.close_stdin()
        _signal_group(self.proc, signal.SIGKILL)  # the leader is not reaped yet: safe
        for pipe, take in ((self.proc.stdout, self.read_stdout), (self.proc.stderr, self.read_stderr)):
            for _ in range(16):  # what is buffered already; bounded against a writer outside
                if pipe.closed:
                    break
                before = len(self.out) + len(self.err)
                take(pipe)
                if not pipe.closed and len(self.out) + len(self.err) == before:
                    break
        for pipe in (self.proc.stdout, self.proc.stderr):
            if not pipe.closed:
                self.sel.unregister(pipe)
                pipe.close()
        self.sel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
        try:
            self.proc.wait(timeout=REAP_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - a process stuck in the kernel
            pass

    def result(self, started: float) -> TurnResult:
        code = self.proc.returncode
        outcome = self.reason or ("ok" if code == 0 else "failed")
        out = bytes(self.out)
        text = out.decode("utf-8", errors="replace")
        return TurnResult(outcome=outcome, exit_code=code, output=text,
                          stderr_tail=self.err.decode("utf-8", errors="replace"),
                          digest=hashlib.sha256(out).hexdigest(),
                          excerpt=text.strip()[:EXCERPT_CHARS], started_at=started,
                          ended_at=time.time(), pid=self.proc.pid)


def _drain(fd: int) -> bool:
    """Read what woke us on the cancel descriptor; False once it is closed."""
    try:
        return os.read(fd, 4096) != b""
    except (BlockingIOError, InterruptedError):
        return True
