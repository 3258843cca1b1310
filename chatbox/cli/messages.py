"""``chatbox post | read | tail | approve | deny``: messages in and out.

``tail`` is pushed, never polled (DESIGN §4.6, the Clone pattern): it subscribes to each
channel's topic first, waits until the event socket is connected, then takes a snapshot (each
channel's last seq), and from then on blocks on events. An event is only a hint: on each one it
reads the channel from the last seq it printed, so a lost or coalesced event costs nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from chatbox.bus import wire
from chatbox.bus.client import BusClient
from chatbox.cli.output import json_line, message_line, message_obj
from chatbox.cli.session import DEADLINE, Failed, Session, UsageError
from chatbox.runtime import env
from chatbox.runtime.signals import StopSignals

PAGE = 1000
SNAPSHOT_SINCE = 2**62  # a Read past every seq: no messages, just the channel's last seq


def emit(msg: wire.Message, as_json: bool) -> None:
    print(json_line(message_obj(msg)) if as_json else message_line(msg), flush=True)


def history(client: BusClient, channel: str, since: int, limit: int | None,
            each: Callable[[wire.Message], bool]) -> tuple[int, bool]:
    """Feed ``each`` the messages after ``since``, oldest first, page by page.

    Stops after ``limit`` messages or when ``each`` returns False. Returns the last seq fed and
    whether more messages remain unread.
    """
    remaining = limit
    while True:
        page = PAGE if remaining is None else min(PAGE, remaining)
        result = client.call(wire.Read(channel=channel, since=since, limit=page))
        for msg in result.messages:
            since = msg.seq
            if remaining is not None:
                remaining -= 1
            if not each(msg):
                return since, True
        if not result.more or not result.messages:
            return since, False
        if remaining == 0:
            return since, True


# --------------------------------------------------------------------------- post

def _read_body(arg: str) -> str:
    if arg != "-":
        return arg
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Failed(f"the body on stdin is not valid UTF-8 (byte {exc.start})") from None
    return text.rstrip("\n")


def _turn_from_env() -> int | None:
    try:
        return env.turn_id()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def cmd_post(s: Session, args: argparse.Namespace) -> int:
    kind = "post" if args.title is not None else "chat"
    req = wire.Post(channel=args.channel, body=_read_body(args.body), kind=kind,
                    title=args.title, type=args.type, tier=args.tier,
                    in_reply_to=args.reply_to, turn=_turn_from_env())
    msg = s.client.call(req).message
    emit(msg, args.json)
    return 0


# --------------------------------------------------------------------------- read

def cmd_read(s: Session, args: argparse.Namespace) -> int:
    def show(msg: wire.Message) -> bool:
        emit(msg, args.json)
        return True

    last, more = history(s.client, args.channel, args.since, args.limit, show)
    if more:
        print(f"chatbox: more messages after #{last}: read on with --since {last}",
              file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- tail

class Follower:
    """Prints each channel's new messages as their events arrive."""

    def __init__(self, s: Session, channels: list[str], as_json: bool, count: int | None):
        self.client = s.client
        self.endpoints = s.endpoints
        self.channels = list(dict.fromkeys(channels))
        self.as_json = as_json
        self.left = count
        self.seen: dict[str, int] = {}

    def _emit(self, msg: wire.Message) -> bool:
        emit(msg, self.as_json)
        if self.left is not None:
            self.left -= 1
            return self.left > 0
        return True

    @property
    def done(self) -> bool:
        return self.left is not None and self.left <= 0

    def connect(self, timeout: float = DEADLINE) -> None:
        """Subscribe first, and return once the subscriptions are live at the broker."""
        self.client.subscribe(wire.channel_topic(ch) for ch in self.channels)
        self.client.sync_events(timeout)

    def snapshot(self, since: int | None) -> None:
        """Each channel's starting point: ``since`` (printing history after it) or its present."""
        for ch in self.channels:
            if since is None:
                result = self.client.call(wire.Read(channel=ch, since=SNAPSHOT_SINCE, limit=1))
                self.seen[ch] = result.last_seq
            else:
                self.seen[ch] = since
        if since is not None:  # the history of every channel, interleaved in seq order
            backlog: list[wire.Message] = []
            for ch in self.channels:
                self.seen[ch], _ = history(self.client, ch, since, None,
                                           lambda m: backlog.append(m) is None)
            for msg in sorted(backlog, key=lambda m: m.seq):
                if not self._emit(msg):
                    break

    def catch_up(self, channel: str) -> None:
        self.seen[channel], _ = history(self.client, channel, self.seen[channel], None, self._emit)

    def follow(self, signals: StopSignals) -> None:
        """Block on events until the count is reached, or until a stop signal (Ctrl-C, TERM).
        The poll watches the signals' descriptor too: a Ctrl-C that landed just before it
        blocked was otherwise seen only at the next event, or never."""
        while not self.done and not signals.stopping:
            got = self.client.recv_event(None, wake=signals.fileno())
            if got is None:
                continue
            event = got[1]
            if isinstance(event, wire.MessageEvent) and event.channel in self.seen \
                    and event.seq > self.seen[event.channel]:
                self.catch_up(event.channel)


def cmd_tail(s: Session, args: argparse.Namespace) -> int:
    follower = Follower(s, args.channels, args.json, args.count)
    try:
        follower.connect()
        follower.snapshot(args.since)
        if follower.done:
            return 0
        # The signals are ours before the line that says so: a TERM sent on reading it ends
        # the tail quietly, not by the default action.
        with StopSignals.installed() as signals:
            print(f"tailing {' '.join(follower.channels)}; Ctrl-C to stop", file=sys.stderr,
                  flush=True)
            follower.follow(signals)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a tail ends: quietly, and not an error
    return 0


# --------------------------------------------------------------------------- decisions

def _decide(s: Session, seq: int, approve: bool, reason: str | None, as_json: bool) -> int:
    result = s.client.call(wire.Decide(seq=seq, approve=approve, reason=reason))
    if isinstance(result, wire.MessageResult):
        emit(result.message, as_json)
    elif as_json:
        print(json_line({"seq": seq, "approve": approve, "reason": reason}))
    else:
        print(f"{'approved' if approve else 'denied'} #{seq}")
    return 0


def cmd_approve(s: Session, args: argparse.Namespace) -> int:
    return _decide(s, args.seq, True, args.comment, args.json)


def cmd_deny(s: Session, args: argparse.Namespace) -> int:
    if not args.reason.strip():
        raise UsageError("deny needs a reason: --reason TEXT")
    return _decide(s, args.seq, False, args.reason, args.json)
