"""The first process of a turn's sandbox (PID 1 of its PID namespace): it runs the turn's command
and ends the moment the turn's supervisor does, whenever that is.

    python -I -S sandbox_init.py -- ARGV...      environment: CHATBOX_LIFELINE_FD=N

Descriptor N is the read end of a pipe whose write end only the supervisor holds
(``capped.run_capped``'s lifeline). It reads end-of-file once the supervisor closes it (the turn
is over, cancelled or out of time) or dies — even a death before this process started, which a
parent-death signal cannot cover: bubblewrap arms its own only after setting the sandbox up, and
a bubblewrap killed before then leaves its child waiting for it forever. So nothing kills
bubblewrap: on end-of-file this exits at once, the kernel kills every process left in the
namespace (a ``setsid`` grandchild included), and bubblewrap ends with it. Otherwise it reaps
what the namespace orphans and, when the command exits, exits with its status (128 + N for a
signal, as bubblewrap reports one).

It runs isolated, standard library only, so it starts in milliseconds.
"""

from __future__ import annotations

import os
import select
import signal
import sys

LIFELINE = "CHATBOX_LIFELINE_FD"


def status_of(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    if argv[:1] != ["--"] or len(argv) < 2 or LIFELINE not in os.environ:
        print(f"sandbox_init: usage: {LIFELINE}=N sandbox_init.py -- ARGV...", file=sys.stderr)
        return 2
    lifeline = int(os.environ.pop(LIFELINE))
    os.set_inheritable(lifeline, False)  # the turn's own processes never hold it
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that it wakes the select
    try:
        command = os.posix_spawnp(argv[1], argv[1:], os.environ)
    except OSError as exc:
        print(f"sandbox: cannot start {argv[1]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    while True:
        ready, _, _ = select.select([lifeline, wake_r], [], [])
        if lifeline in ready:  # the supervisor is gone or done: so is everything in here
            os._exit(128 + signal.SIGKILL)
        try:
            while os.read(wake_r, 512):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = 0
            if pid == 0:
                break
            if pid == command:
                return status_of(wait_status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
