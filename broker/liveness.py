"""Knowing whether a supervisor runs, without a timer: a pidfd per local supervisor, and, after a
restart of the broker, the identity it kept of each.

A supervisor's Hello names its pid and host. On this host the broker reads the process's start
time (field 22 of ``/proc/PID/stat``: a pid is reused, a pid with its start time is not) and
keeps host, pid and start time in ``agent_state`` beside the supervisor's id, and opens a pidfd
for it (Linux ≥ 5.3), which the request loop polls beside its sockets: it becomes readable the
moment the process exits. After its own restart the broker looks at each process it kept (is it
still there, with the same start time?) and watches the ones that are, so another supervisor's
Hello for the same agent is refused while the first runs.

A supervisor on another host (over ``tcp://``; or one that cannot be watched here, for want of
pidfds or ``/proc``) subscribes, before its Hello, to a topic of its own (``alive_topic``) on
the broker's XPUB, and makes sure the subscription is live before it says Hello. Its event
connection carries ZMTP heartbeats; when it ends — the process died and its host closed it, or
the link went silent for ``heartbeat_timeout`` after a ping (ping every ``heartbeat``) — the XPUB
gives the unsubscription of that topic, in order with the subscriptions, and the supervisor is
recorded gone like an exited one: its turn lost and redelivered. While that subscription lasts
the supervisor counts as running, so a second supervisor's Hello for the same agent is
refused. So a remote supervisor's death is noticed within ``heartbeat + heartbeat_timeout`` seconds (40 by default), at once if its host
still runs. After a restart of the broker, a remote supervisor that died meanwhile is noticed by
its successor's Hello.
"""

from __future__ import annotations

import os
import socket

from chatbox.bus.client import alive_topic

_ALIVE = alive_topic("")[:-1]  # the prefix of every alive topic (without the terminating NUL)


def start_time(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of ``/proc/PID/stat``);
    None if there is no such process (a zombie counts as gone) or no ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    fields = data.rpartition(b")")[2].split()  # the name may hold spaces and parentheses
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])  # fields[0] is field 3


class Liveness:
    def __init__(self) -> None:
        self._fd_of: dict[str, int] = {}   # supervisor id -> pidfd
        self._sup_of: dict[int, str] = {}  # pidfd -> supervisor id
        self._connected: set[str] = set()  # remote supervisors whose alive topic is subscribed
        self.host = socket.gethostname()

    def identify(self, pid: int | None, host: str | None) -> int | None:
        """The start time of a process said to be ``pid`` on ``host``, if it is on this host."""
        return start_time(pid) if pid is not None and host == self.host else None

    def watch(self, supervisor: str, pid: int | None, host: str | None,
              started: int | None = None) -> bool | None:
        """Watch a local supervisor: True if watched, False if it is not running (not that
        process any more: ``started`` differs), None if it cannot be watched from here."""
        if supervisor in self._fd_of:
            return True
        if pid is None or host != self.host or not hasattr(os, "pidfd_open"):
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError:
            return None
        # checked after the pidfd is open: if the pid was reused before, the start time differs
        now = start_time(pid)
        if now is None or (started is not None and now != started):
            os.close(fd)
            return False
        self._fd_of[supervisor] = fd
        self._sup_of[fd] = supervisor
        return True

    def is_alive(self, supervisor: str) -> bool | None:
        """True while a watched supervisor runs, or a remote one's event connection lasts;
        None when it cannot be watched from here."""
        return True if supervisor in self._fd_of or supervisor in self._connected else None

    def on_subscription(self, frame: bytes) -> str | None:
        """A subscription frame of the XPUB: the supervisor it shows gone (its alive topic
        unsubscribed), unless that supervisor is watched here by its pidfd; else None. One it
        shows subscribed counts as running (``is_alive``) until then."""
        if not frame[1:].startswith(_ALIVE) or not frame.endswith(b"\0"):
            return None
        sup = frame[1 + len(_ALIVE):-1].decode("utf-8", "replace")
        if frame[:1] == b"\x01":
            self._connected.add(sup)
            return None
        self._connected.discard(sup)
        return None if sup in self._fd_of else sup

    def fds(self) -> list[int]:
        return list(self._sup_of)

    def exited(self, fd: int) -> str | None:
        """Forget a pidfd that became readable; return whose it was."""
        sup = self._sup_of.pop(fd, None)
        if sup is not None:
            del self._fd_of[sup]
            os.close(fd)
        return sup

    def close(self) -> None:
        for fd in list(self._sup_of):
            os.close(fd)
        self._sup_of.clear()
        self._fd_of.clear()
