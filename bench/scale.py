"""The broker at a million messages: inbox, claim, read, search and start-up.

One workspace is built with ``--messages`` messages (default 1,000,000) in ``#general``, every
one of them unacked for two agents subscribed to it: ``kim`` (wake mode ``all``) and ``lee``
(wake mode ``mentions``; one message in 20 mentions @lee). The messages are stored in bulk,
not posted: ``executemany`` in transactions of 100,000 rows through the broker's own ``Store``
and schema (at synchronous=OFF; the ``addressed`` trigger fires for each row), then the
full-text index is fed by the broker's own ``index_messages``, so the database is the one a
broker that had served the posts would hold, minus their idempotency records.

Then the real broker process (``python -m chatbox.broker --synchronous FULL``, or NORMAL) is
started on it, and every figure is a request of the real ``BusClient`` over ``ipc://``, one at
a time:

    start-up    from exec to the "ready" log line, the first start and the restarts after it
    inbox       kim's inbox (limit 100, the default) with ~1M unacked
    claim       hello, then claim / report ok (which acks the batch of 100 and wakes again)
                per turn, for kim (all) and lee (mentions)
    read        the newest 100 of #general, and the oldest 100
    search      a rare word, a common and a rare word, and a word in every message (ranked
                over all its matches)
    status, rooms
    breakdown   the same again (half as many calls) against a broker under the timing probe
                of ``bench/probe.py``: per request, the time spent handling it and committing
                it (for the breakdown only, never a headline figure)

Timings are printed as percentiles over ``--calls`` calls each, with what the broker read from
the disk during each request's calls (``/proc/PID/io``): pages of the database the kernel has
dropped from memory since the build cost a disk read each, and the tail follows them. Nothing
is asserted. The run takes a few minutes, most of it the build.

    .venv/bin/python bench/scale.py [--messages 1000000] [--calls 300] [--restarts 3]
        [--synchronous FULL|NORMAL] [--quiet-wait 20] [--no-breakdown] [--keep DIR]
        [--json FILE]
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (ROOT, machine, percentile, sqlite_commit_baseline, table,  # noqa: E402
                          wait_for_quiet)
from chatbox import harness  # noqa: E402
from chatbox.bus import wire  # noqa: E402

CHANNEL = "#general"
AGENTS = {"kim": "all", "lee": "mentions"}
MENTION_EVERY = 20
CONFIG = """\
[limits]                    # the bench drains turn after turn: no turn budget, no livelock
max_turns_per_hour = 1000000
repeat_threshold = 1000000
"""


# ---------------------------------------------------------------------------- the workspace

def build(root: Path, n: int, chunk: int = 100_000) -> dict[str, object]:
    """A workspace at ``root`` holding ``n`` messages unacked for kim and lee; returns the
    tokens and how long the build took."""
    from chatbox.broker import channels, principals
    from chatbox.broker.bootstrap import init_workspace
    from chatbox.broker.context import Ctx, Principal
    from chatbox.broker.store import Store, index_messages
    from chatbox.runtime.workspace import Workspace, new_token

    t0 = time.perf_counter()
    ws = Workspace(root)
    tokens = {"bench": init_workspace(ws, "bench")}
    ws.config_path.write_text(CONFIG, encoding="utf-8")
    store = Store(ws.db_path, synchronous="OFF")
    try:
        now = time.time()
        with store.write() as db:
            ctx = Ctx(db, Principal("bench", "admin"), now)
            principals.create(db, "bob", "agent", new_token(), now=now)
            for name, wake in AGENTS.items():
                tokens[name] = new_token()
                principals.create(db, name, "agent", tokens[name], now=now)
                channels.subscribe(ctx, CHANNEL, "full", wake, name)  # offset 0: all unacked
        first = 1 + (store.db.execute("SELECT coalesce(max(seq), 0) FROM messages").get or 0)
        for start in range(0, n, chunk):
            with store.write() as db:
                db.executemany(
                    "INSERT INTO messages(seq, channel, author, kind, body, mentions, chain, "
                    "created_at) VALUES (?, ?, 'bob', 'chat', ?, ?, ?, ?)",
                    (_row(first + i, now) for i in range(start, min(n, start + chunk))))
        inserted = time.perf_counter() - t0
        with store.write() as db:
            db.execute("UPDATE channels SET last_seq = (SELECT max(seq) FROM messages), "
                       "last_activity = ? WHERE name = ?", (now, CHANNEL))
            index_messages(db)
    finally:
        store.close()
    return {"tokens": tokens, "insert_s": inserted, "build_s": time.perf_counter() - t0,
            "db_bytes": ws.db_path.stat().st_size}


def _row(seq: int, now: float) -> tuple:
    i = seq - 1
    mention = i % MENTION_EVERY == 0
    body = (f"status note {i}: build {i % 10007} on runner {i % 31} finished in {i % 97} s"
            + (" @lee please look" if mention else ""))
    return (seq, CHANNEL, body, "lee" if mention else "", seq, now)


# ---------------------------------------------------------------------------- the broker

def start_broker(root: Path, n: int, probe: Path | None = None, synchronous: str = "FULL",
                 timeout: float = 120.0) -> tuple[harness.Process, float]:
    """The ``n``-th start of the real broker on ``root`` (its own log file), under the timing
    probe if ``probe`` names its output; seconds from exec to its "ready" log line (polled
    every millisecond, not with the harness's back-off)."""
    from bench.probe import broker_argv

    argv = [*broker_argv(probe), "--workspace", str(root), "--synchronous", synchronous]
    t0 = time.perf_counter()
    proc = harness.spawn(f"broker-{n}", argv, log_dir=root, cwd=root,
                         env=harness.child_env(None, PYTHONPATH=str(ROOT)), ready_timeout=None)
    deadline = t0 + timeout
    while not any(e.get("event") == harness.READY for e in proc.log_events()):
        if proc.returncode is not None or time.perf_counter() > deadline:
            proc.kill()
            raise RuntimeError(f"the broker did not get ready:\n{proc.log_text()[-3000:]}")
        time.sleep(0.001)
    return proc, time.perf_counter() - t0


class Calls:
    """Every measured call: its name, and when it started and ended (``time.monotonic``, the
    probe's clock), so a probed broker's batches can be told apart by request."""

    def __init__(self, broker_pid: int | None = None) -> None:
        self.windows: list[tuple[float, float, str]] = []
        self.pid = broker_pid
        self.disk: dict[str, int] = {}  # bytes the broker read from the disk, by request

    def time(self, name: str, fn: Callable[[], object]) -> object:
        before = self._read_bytes()
        t = time.monotonic()
        try:
            return fn()
        finally:
            self.windows.append((t, time.monotonic(), name))
            if before is not None:
                self.disk[name] = self.disk.get(name, 0) + self._read_bytes() - before

    def _read_bytes(self) -> int | None:
        """What the broker has read from the disk so far (its page cache misses): the pages
        of a large database the kernel dropped from memory cost a disk read each."""
        if self.pid is None:
            return None
        for line in Path(f"/proc/{self.pid}/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
        return None

    def repeat(self, name: str, calls: int, fn: Callable[[], object]) -> None:
        """``calls`` measured calls of ``fn``, after five unmeasured warm-up calls."""
        for _ in range(5):
            fn()
        for _ in range(calls):
            self.time(name, fn)

    def seconds(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for t0, t1, name in self.windows:
            out.setdefault(name, []).append(t1 - t0)
        return out

    def name_of(self, t: float) -> str | None:
        """The call during which a batch that started at ``t`` ran."""
        i = bisect.bisect_right(self.windows, (t, float("inf"), "")) - 1
        return self.windows[i][2] if i >= 0 and t <= self.windows[i][1] else None


class Turns:
    """One agent's supervisor, as the bench plays it: hello once, then claim and report ok,
    over and over (each report acks its batch and, more being due, wakes the agent again)."""

    def __init__(self, client, agent: str):
        self.client, self.agent = client, agent
        self.supervisor = f"bench-{agent}"
        hello = client.call(wire.Hello(agent=agent, supervisor=self.supervisor))
        if hello.state != "WAKING":
            raise RuntimeError(f"{agent} has nothing due: use more --messages or fewer --calls")
        self.epoch = hello.epoch
        self.batch: list[int] = []
        self.drained = False

    def turn(self, i: int, calls: Calls | None = None) -> None:
        if self.drained:
            raise RuntimeError(f"{self.agent} has nothing more due before turn {i}: "
                               "use more --messages or fewer --calls")
        timed = calls.time if calls is not None else (lambda _name, fn: fn())
        mode = AGENTS[self.agent]
        claimed = timed(f"claim of {self.agent} (wake {mode})", lambda: self.client.call(
            wire.Claim(agent=self.agent, supervisor=self.supervisor, epoch=self.epoch)))
        reported = timed(f"report ok of {self.agent} (acks, wakes again)", lambda: self.client.call(
            wire.TurnReport(agent=self.agent, supervisor=self.supervisor, turn=claimed.turn,
                            epoch=claimed.epoch, outcome="ok", output=f"handled batch {i}")))
        self.batch.append(len(claimed.messages))
        self.epoch = reported.epoch
        self.drained = reported.state != "WAKING"


def measure(root: Path, tokens: dict[str, str], calls: int,
            broker_pid: int | None = None) -> tuple[Calls, dict[str, str]]:
    """Every request against one running broker (process ``broker_pid``, whose disk reads are
    counted): the calls, and what each returned."""
    from chatbox.bus.client import BusClient
    from chatbox.runtime.workspace import Workspace

    endpoints = Workspace(root).endpoints()
    admin = BusClient(endpoints, tokens["bench"])
    kim = BusClient(endpoints, tokens["kim"])
    slow = BusClient(endpoints, tokens["bench"], attempt_timeout=60.0)  # for what ranks 1M rows
    last = admin.call(wire.Read(channel=CHANNEL, since=2**62, limit=1)).last_seq
    unacked = last - kim.call(wire.Inbox(limit=1)).messages[0].seq + 1
    rec, returned = Calls(broker_pid), {}

    name = "inbox of kim (limit 100)"
    rec.repeat(name, calls, lambda: kim.call(wire.Inbox(limit=100)))
    returned[name] = f"100 of {unacked:,} unacked"
    for agent in AGENTS:
        turns = Turns(BusClient(endpoints, tokens[agent]), agent)
        for i in range(5):  # warm-up turns, not measured
            turns.turn(-1 - i)
        turns.batch = []
        for i in range(calls):
            turns.turn(i, rec)
        batch = f"batches of {min(turns.batch)}-{max(turns.batch)}"
        returned[f"claim of {agent} (wake {AGENTS[agent]})"] = batch
        returned[f"report ok of {agent} (acks, wakes again)"] = batch
    for name, since in (("read newest 100", last - 100), ("read oldest 100", 0)):
        rec.repeat(name, calls, lambda since=since: admin.call(
            wire.Read(channel=CHANNEL, since=since, limit=100)))
        returned[name] = "100"
    few = max(5, calls // 20)  # what reads every message is called less often
    for name, query, n in (("search '4711' (a rare word)", "4711", calls),
                           ("search 'build 4711' (a common and a rare word)", "build 4711", few),
                           ("search 'status' (in every message)", "status", few)):
        rec.repeat(name, n, lambda query=query: slow.call(wire.Search(query=query, limit=20)))
        returned[name] = f"top {len(slow.call(wire.Search(query=query, limit=20)).messages)}"
    rec.repeat("status", calls, lambda: admin.call(wire.Status()))
    rec.repeat("rooms (unread counts)", few, lambda: slow.call(wire.Rooms()))
    return rec, returned


def breakdown(rec: Calls, batches: list[list[float]]) -> dict[str, dict[str, float]]:
    """Per request, the probed broker's time handling it and committing it (ms, p50 and p99):
    the client sends one request at a time, so each batch holds one request."""
    from bench.probe import PROBE_FIELDS

    handle, commit = PROBE_FIELDS.index("handle"), PROBE_FIELDS.index("commit")
    parts: dict[str, tuple[list[float], list[float]]] = {}
    for b in batches:
        name = rec.name_of(b[0])
        if name is not None:
            h, c = parts.setdefault(name, ([], []))
            h.append(b[handle])
            c.append(b[commit])
    return {name: {"handle_p50": percentile(sorted(h), 50) * 1e3,
                   "handle_p99": percentile(sorted(h), 99) * 1e3,
                   "commit_p50": percentile(sorted(c), 50) * 1e3,
                   "commit_p99": percentile(sorted(c), 99) * 1e3, "batches": len(h)}
            for name, (h, c) in parts.items()}


def summary(seconds: list[float]) -> dict[str, float]:
    v = sorted(seconds)
    return {"calls": len(v), **{f"p{p}": percentile(v, p) * 1e3 for p in (50, 95, 99)},
            "max": (v[-1] if v else float("nan")) * 1e3}


# ---------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=300, help="measured calls of each request")
    p.add_argument("--restarts", type=int, default=3, help="broker starts measured after the first")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="wait up to S seconds for other processes to go quiet before measuring")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL",
                   help="the broker's durability (FULL: every commit is fsynced)")
    p.add_argument("--no-breakdown", action="store_true",
                   help="skip the run against a probed broker (handle and commit per request)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="build the workspace in DIR and leave it there (default: a temporary one)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    return p


def run(root: Path, args) -> dict:
    """Build, measure, restart, and measure again under the probe: every figure."""
    from bench.probe import read_batches

    print(f"building {args.messages:,} messages in {root} ...", file=sys.stderr)
    out: dict = {"build": build(root, args.messages)}
    tokens = out["build"].pop("tokens")
    # The build leaves hundreds of MiB of dirty pages. Written back while measuring, they made
    # the broker's first fsync wait for them (one call of 0.26-0.6 s), and slowed the ones after.
    t0 = time.perf_counter()
    os.sync()
    out["build"]["sync_s"] = time.perf_counter() - t0
    out["load"] = wait_for_quiet(args.quiet_wait)
    out["sqlite"] = sqlite_commit_baseline(seconds=1.0)
    proc, first = start_broker(root, 0, synchronous=args.synchronous)
    try:
        print("measuring ...", file=sys.stderr)
        rec, out["returned"] = measure(root, tokens, args.calls, proc.pid)
    finally:
        proc.stop()
    out["requests"] = {name: summary(v) for name, v in rec.seconds().items()}
    for name, read in rec.disk.items():
        out["requests"][name]["disk_mib"] = read / 2**20
    out["starts_s"] = [first]
    for n in range(1, args.restarts + 1):
        proc, seconds = start_broker(root, n, synchronous=args.synchronous)
        out["starts_s"].append(seconds)
        proc.stop()
    out["breakdown"], out["breakdown_error"] = {}, None
    if not args.no_breakdown:
        print("breakdown (probed broker) ...", file=sys.stderr)
        probe = root / "probe.json"
        proc, _ = start_broker(root, args.restarts + 1, probe, args.synchronous)
        try:
            rec, _ = measure(root, tokens, max(20, args.calls // 2))
            code = proc.stop(timeout=60)  # SIGINT: the probe writes its records as it stops
            if code != 0:
                raise RuntimeError(f"it exited {code} when stopped, so it wrote no records")
            batches = read_batches(probe)
            out["breakdown"] = breakdown(rec, batches)
            if not out["breakdown"]:
                raise RuntimeError(f"none of its {len(batches)} records fell in a measured call")
        except Exception as exc:  # the probe is for explanations: its failure ends only it
            tail = proc.log_text().strip().splitlines()[-1:] or [""]
            out["breakdown_error"] = f"{type(exc).__name__}: {exc} (broker: {tail[0]})"
        finally:
            proc.stop(timeout=60)
    return out


def report(out: dict, mach: dict[str, str], args) -> str:
    lines = ["## Machine", ""] + [f"- {k}: {v}" for k, v in mach.items()]
    lines += [f"- load from other processes just before measuring: {out['load']:.0%} of all "
              "CPUs", "",
              f"## The workspace: {args.messages:,} messages in {CHANNEL}, all unacked for kim "
              f"(wake all) and lee (wake mentions, 1 in {MENTION_EVERY} mentions it)", "",
              table(["build", "figure"], [
                  ["bulk insert (s)", out["build"]["insert_s"]],
                  ["with the full-text index (s)", out["build"]["build_s"]],
                  ["written to disk before measuring: sync (s)", out["build"]["sync_s"]],
                  ["database (MiB)", out["build"]["db_bytes"] / 2**20]]),
              "", "## Baseline (same machine, same run)", "",
              table(["baseline", "figure"], [
                  ["SQLite one single-row commit, WAL, synchronous=FULL (ms)",
                   out["sqlite"]["commit_ms"]]]),
              "", f"## Requests over the bus (real broker, synchronous={args.synchronous}, "
              "BusClient, ipc, one request at a time)", "",
              table(["request", "calls", "returned", "p50 ms", "p95 ms", "p99 ms", "max ms",
                     "read from disk, MiB"],
                    [[name, r["calls"], out["returned"].get(name, ""), r["p50"], r["p95"],
                      r["p99"], r["max"], r.get("disk_mib", float("nan"))]
                     for name, r in out["requests"].items()])]
    if out["breakdown_error"]:
        lines += ["", f"(no breakdown: the probed broker failed: {out['breakdown_error']})"]
    if out["breakdown"]:
        lines += ["", "## In the broker (probed run): handling a request, and its COMMIT "
                  "(WAL write and fsync)", "",
                  table(["request", "batches", "handle p50 ms", "handle p99 ms",
                         "commit p50 ms", "commit p99 ms"],
                        [[name, b["batches"], b["handle_p50"], b["handle_p99"], b["commit_p50"],
                          b["commit_p99"]] for name, b in out["breakdown"].items()])]
    lines += ["", f"## Broker start-up at {args.messages:,} messages (exec to \"ready\")", "",
              table(["start", "seconds"], [["first, after the build", out["starts_s"][0]]]
                    + [[f"restart {i}", s] for i, s in enumerate(out["starts_s"][1:], 1)])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.monotonic()
    root = args.keep or harness.short_tempdir("cbxscale")
    root.mkdir(parents=True, exist_ok=True)
    try:
        out = run(root, args)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    mach = machine()
    print(report(out, mach, args))
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python bench/scale.py "
          f"{' '.join(sys.argv[1:] if argv is None else argv)})")
    if args.json:
        args.json.write_text(json.dumps({"machine": mach, **out,
                                         "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
