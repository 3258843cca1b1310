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

import _signal as signal  # signal's own C module: `import signal` builds its enums, ~10 ms a turn
import os
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
    command = 0

    def reap(*_: object) -> None:
        """SIGCHLD: reap what the namespace left us; the command's end is ours."""
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == command:
                os._exit(status_of(wait_status))

    # held until the command's pid is known, so its end cannot be reaped unrecognised
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    signal.signal(signal.SIGCHLD, reap)
    try:
        command = os.posix_spawnp(argv[1], argv[1:], os.environ, setsigmask=())
    except OSError as exc:
        print(f"sandbox: cannot start {argv[1]!r}: {exc.strerror}", file=sys.stderr)
        return 127
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    while os.read(lifeline, 512):  # the handler runs between two reads; nothing is written
        pass
    os._exit(128 + signal.SIGKILL)  # the supervisor is gone or done: so is everything in here


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
