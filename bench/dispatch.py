"""Dispatch (issue 3): how fast a post wakes an agent and starts its turn, a fan-out to many
agents, what an idle fleet costs, and the memory of a supervisor.

Every figure is of real processes from ``tests/fleet.py``: ``python -m chatbox.broker`` and one
``python -m chatbox.supervisor --agent A`` per agent, stub engine, on a temporary workspace, over ipc.
The run stops by itself: about two minutes with the defaults (more if it waits for quiet).

    .venv/bin/python bench/dispatch.py [all|baseline|latency|fanout|idle|memory]
        [--posts 200] [--warmup 10] [--gap 0.01] [--latency-budget 60] [--probe-posts 100]
        [--agents 50] [--rounds 3] [--idle-agents 20] [--idle-seconds 60] [--quiet-wait 20]
        [--json FILE]

    baseline  same machine, same run: how long Popen takes to return for /bin/true — through
              the runner (``run_capped``: setpriv, no preexec_fn), bare (vfork), with a
              preexec_fn (fork) — and what setpriv's extra exec adds to a run; ``python -c
              pass`` with and without site; the stub with a one-message batch (the exact argv,
              env and stdin a supervisor gives it); one SQLite commit, one ZeroMQ round trip;
              the memory of a bare interpreter and of one that imported what a supervisor does
    latency   one agent; --posts human posts, one at a time, each after the agent is ASLEEP
              again (the bench follows the broker's agent events, it never polls): the wake,
              the turn's subprocess started, end to end to the stub's reply stored. Then
              --probe-posts more against a broker under ``bench/probe.py``'s timing probe,
              which splits the wake and the claim at the broker's COMMITs
    fanout    --agents agents, each with its own supervisor, all subscribed to one channel;
              one post that mentions them all, --rounds times: until the last turn's subprocess
              started and the last reply stored, and the CPU it took
    idle      --idle-agents supervisors and the broker, after one turn each and once the
              machine is quiet: their CPU and wake-ups over --idle-seconds, and memory
    memory    the idle fleet without the window: RSS/PSS/USS per supervisor and of the broker

One post's timeline, and the clock each point is read from (one machine, one clock)::

    created_at      the broker's time.time() as the batch holding the post began: handling
                    (INSERT, dispatcher, audit), COMMIT (fsync), replies, wake published
    wake            supervisor log line "wake" (debug): WakeEvent received and decoded
    turn_start      Claim round trip done: the broker committed WAKING -> BUSY with the batch
    turn_spawned    prompt and argv built, Popen returned: ``setpriv`` has been exec'd; it sets
                    the parent-death signal and execs the stub (the baseline "setpriv adds"
                    measures that last step)
    turn            the stub ran (Python start-up, JSON, "ack N"), exited, pipes drained
    reply stored    created_at of the reply: the batch holding the TurnReport began

created_at is stamped before the post is even handled, so "created_at -> wake" (the issue's
definition) includes the post's own transaction; the probe run gives the wake from the end of
its COMMIT. Every other phase checks what the rest of the machine used meanwhile and says so.
"""

from __future__ import annotations

import argparse
import bisect
import json
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine, percentile, wait_for_quiet  # noqa: E402
from bench.dispatch_report import LATENCY_ROWS, PROBE_ROWS, report  # noqa: E402
from bench.idle import Others, cpu_sample, idle_fleet, memory  # noqa: E402
from bench.probe import PROBE_FIELDS, broker_argv, read_batches  # noqa: E402
from bench.turn_baselines import measure_baselines, summary  # noqa: E402
from chatbox.bus import wire  # noqa: E402
from chatbox.bus.client import BusClient  # noqa: E402
from chatbox.harness import Process, Timeout, wait_event  # noqa: E402
from tests.fleet import Fleet  # noqa: E402

# The default turn budget (30 an hour) would pause an agent of a 200-post run; nothing else
# differs from the defaults.
CONFIG = "[limits]\nmax_turns_per_hour = 1000000\n"


# ---------------------------------------------------------------------------- helpers

def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def start_fleet(agents: list[str], channel: str, *, wake: str, debug: bool,
                probe: bool = False) -> Fleet:
    """A broker, ``agents`` subscribed to ``channel``, one supervisor each, all started at once
    (then each waited for: its "ready" line, bounded). ``probe``: the broker runs under
    ``bench/probe.py``'s timing probe, which writes ``probe.json`` in the workspace on stop."""
    fleet = Fleet()
    try:
        fleet.write_config(CONFIG)
        fleet.start_broker(broker_argv(fleet.root / "probe.json") if probe else None)
        fleet.client().call(wire.CreateChannel(name=channel, topic="dispatch benchmark"))
        for a in agents:
            fleet.add_agent(a, channel, wake=wake)
        extra = ["--log-level", "debug"] if debug else []
        started = [fleet.spawn_supervisor(a, *extra) for a in agents]
        for proc in started:
            proc.wait_ready(timeout=120)
        fleet.supervisors = dict(zip(agents, started))  # keyed by agent, as the phases read them
    except BaseException:
        fleet.close()
        raise
    return fleet


class Watcher:
    """The broker's agent events, followed on its PUB socket (the bench never polls)."""

    def __init__(self, fleet: Fleet, agents: list[str]):
        self.client = BusClient(fleet.ws.endpoints(), fleet.admin_token)
        self.client.subscribe([wire.agent_topic(a) for a in agents])
        self.client.sync_events()

    def drain(self) -> None:
        while self.client.recv_event(0) is not None:
            pass

    def turns_done(self, agents: set[str], timeout: float) -> None:
        """Return once every agent in ``agents`` went BUSY and then ASLEEP (its turn reported)."""
        busy, done = set(), set()

        def seen(ev: wire.Event) -> None:
            if isinstance(ev, wire.AgentEvent) and ev.agent in agents:
                if ev.state == "BUSY":
                    busy.add(ev.agent)
                elif ev.state == "ASLEEP" and ev.agent in busy:
                    done.add(ev.agent)
        try:
            wait_event(self.client, lambda _: done == agents, timeout, seen=seen)
        except Timeout:
            raise RuntimeError(f"{len(agents - done)} agents did not finish a turn within "
                               f"{timeout:g}s: {sorted(agents - done)[:5]}") from None

    def close(self) -> None:
        self.client.close()


def turns_by_seq(proc: Process) -> dict[int, dict]:
    """The supervisor's turns of one message each, by that message's seq: the times (epoch
    seconds) of its first wake before the turn, turn_start, turn_spawned and the turn line."""
    out, by_turn, wake = {}, {}, None
    for e in proc.log_events():
        ev = e.get("event")
        if ev == "wake" and wake is None:
            wake = stamp(e["timestamp"])
        elif ev == "turn_start":
            by_turn[e["turn"]] = t = {"wake": wake, "start": stamp(e["timestamp"])}
            wake = None
            if len(e["batch"]) == 1:
                out[e["batch"][0]] = t
        elif ev == "turn_spawned" and e["turn"] in by_turn:
            by_turn[e["turn"]]["spawned"] = stamp(e["timestamp"])
        elif ev == "turn" and e["turn"] in by_turn:
            by_turn[e["turn"]].update(end=stamp(e["timestamp"]), seconds=e["seconds"],
                                      outcome=e["outcome"])
    return out


def replies(fleet: Fleet, channel: str, since: int) -> dict[tuple[str, int], float]:
    """(author, in_reply_to) -> created_at of every reply in ``channel`` after ``since``."""
    out = {}
    while True:
        page = fleet.read(channel, since)
        for m in page:
            if m.in_reply_to is not None:
                out[(m.author, m.in_reply_to)] = m.created_at
        if len(page) < 1000:
            return out
        since = page[-1].seq


# ---------------------------------------------------------------------------- latency

def measure_latency(posts: int, warmup: int, gap: float, budget: float,
                    probe: bool = False) -> dict:
    """``posts`` human posts to one agent, each once it is ASLEEP again. ``probe``: the broker
    runs under the timing probe, to split created_at -> wake at the end of the post's COMMIT."""
    label = " (broker under the timing probe)" if probe else ""
    print(f"latency{label}: {warmup} + {posts} posts to one agent ...", file=sys.stderr)
    channel = "#lat"
    fleet = start_fleet(["lat"], channel, wake="all", debug=True, probe=probe)
    sent = []
    try:
        watch = Watcher(fleet, ["lat"])
        others = Others([fleet.broker.pid, fleet.supervisors["lat"].pid])
        deadline = time.monotonic() + budget
        for i in range(warmup + posts):
            if time.monotonic() > deadline:
                print(f"latency: stopped at the {budget:g}s budget", file=sys.stderr)
                break
            watch.drain()
            t_send = time.time()
            m = fleet.post(channel, f"latency probe {i}: please acknowledge")
            t_ack = time.time()
            watch.turns_done({"lat"}, timeout=15)
            if i >= warmup:
                sent.append((m.seq, m.created_at, t_send, t_ack))
            time.sleep(gap)  # the agent is back in poll(): the next post finds it idle
        others_cores = others.cores()
        watch.close()
        turns = turns_by_seq(fleet.supervisors["lat"])
        stored = replies(fleet, channel, sent[0][0] - 1 if sent else 0)
        commits = probe_commits(fleet) if probe else None
    finally:
        fleet.close()
    cols: dict[str, list[float]] = {k: [] for k in [*(k for _, k in LATENCY_ROWS),
                                                     *(k for _, k in PROBE_ROWS)]}
    bad = 0
    for seq, created, t_send, t_ack in sent:
        t = turns.get(seq)
        reply = stored.get(("lat", seq))
        if not t or t.get("wake") is None or "spawned" not in t or t.get("outcome") != "ok" \
                or reply is None:
            bad += 1
            continue
        cols["post_rtt"].append(t_ack - t_send)
        cols["ack_to_wake"].append(t["wake"] - t_ack)
        cols["wake"].append(t["wake"] - created)
        cols["claim"].append(t["start"] - t["wake"])
        cols["spawn"].append(t["spawned"] - t["start"])
        cols["spawned"].append(t["spawned"] - created)
        cols["stub"].append(t["seconds"])
        cols["report"].append(reply - t["end"])
        cols["e2e"].append(reply - created)
        post = commits.batch_of(created) if commits else None
        claim = commits.first_after(t["wake"]) if commits else None
        if post is not None and claim is not None and claim["began"] < t["start"]:
            for key, value in (("clock_check", created - post["began"]),
                               ("post_handle", post["handle"]), ("post_sql", post["sql"]),
                               ("commit", post["commit"]), ("post_send", post["send"]),
                               ("commit_end_to_wake", t["wake"] - post["commit_end"]),
                               ("wake_to_claim", claim["began"] - t["wake"]),
                               ("claim_handle", claim["handle"]), ("claim_sql", claim["sql"]),
                               ("claim_commit", claim["commit"]),
                               ("claim_end_to_start", t["start"] - claim["commit_end"])):
                cols[key].append(value)
    return {"posts": len(sent), "incomplete": bad, "gap_s": gap, "others_cores": others_cores,
            "probe": probe,
            "summary": {k: summary(v) for k, v in cols.items() if v}}


class Commits:
    """The broker's batches from the timing probe (``bench/common.py``), on the wall clock."""

    def __init__(self, batches: list[list[float]]):
        # the probe reads time.monotonic(); the supervisors' logs and created_at time.time()
        offset = time.time() - time.monotonic()
        self.rows = sorted([b[0] + offset, *b[1:]] for b in batches)
        self.began = [r[0] for r in self.rows]

    @staticmethod
    def _times(row: list[float]) -> dict[str, float]:
        f = dict(zip(PROBE_FIELDS, row))
        return {"began": f["t"], "handle": f["handle"], "commit": f["commit"], "send": f["send"],
                "sql": sum(v for k, v in f.items() if k.startswith("sql_")),
                "commit_end": f["t"] + f["handle"] + f["commit"]}

    def batch_of(self, created_at: float) -> dict[str, float] | None:
        """The batch that stamped ``created_at``: the one that began last before it (within a
        millisecond), else None."""
        i = bisect.bisect_right(self.began, created_at + 1e-4) - 1
        if i < 0 or created_at - self.began[i] > 1e-3:
            return None
        return self._times(self.rows[i])

    def first_after(self, t: float) -> dict[str, float] | None:
        """The first batch that began after ``t`` (after a wake: the one holding the Claim)."""
        i = bisect.bisect_left(self.began, t)
        return self._times(self.rows[i]) if i < len(self.rows) else None


def probe_commits(fleet: Fleet) -> Commits:
    """Stop the probed broker gracefully (the probe writes its records then) and read them."""
    fleet.stop_broker()
    return Commits(read_batches(fleet.root / "probe.json"))


# ---------------------------------------------------------------------------- fan-out

def measure_fanout(n: int, rounds: int, timeout: float, quiet_wait: float) -> dict:
    print(f"fan-out: starting {n} supervisors ...", file=sys.stderr)
    agents = [f"f{i:02d}" for i in range(n)]
    channel = "#fan"
    t0 = time.monotonic()
    # "mentions": the post names them all, and the 50 replies (to a human's post) wake nobody;
    # with "all" every reply would wake the 49 others, a storm the hop budget ends only later.
    fleet = start_fleet(agents, channel, wake="mentions", debug=True)
    started_s = time.monotonic() - t0
    body = "fan-out: " + " ".join(f"@{a}" for a in agents)
    out = {"agents": n, "supervisors_start_s": started_s, "rounds": []}
    try:
        watch = Watcher(fleet, agents)
        pids = {"broker": fleet.broker.pid} | {a: p.pid for a, p in fleet.supervisors.items()}
        posted, others = [], Others(list(pids.values()))
        for r in range(rounds):
            out.setdefault("quiet_before", []).append(wait_for_quiet(quiet_wait))
            watch.drain()
            cpu0 = {k: cpu_sample(pid, children=True)["tick_s"] for k, pid in pids.items()}
            m = fleet.post(channel, body)
            watch.turns_done(set(agents), timeout=timeout)
            cpu1 = {k: cpu_sample(pid, children=True)["tick_s"] for k, pid in pids.items()}
            posted.append((m.seq, m.created_at, sum(cpu1.values()) - sum(cpu0.values()),
                           cpu1["broker"] - cpu0["broker"]))
        out["others_cores"] = others.cores()
        watch.close()
        out["memory_after"] = {k: memory(pid) for k, pid in pids.items()}
        turns = {a: turns_by_seq(p) for a, p in fleet.supervisors.items()}
        stored = replies(fleet, channel, posted[0][0] - 1)
    finally:
        fleet.close()
    for seq, created, cpu, broker_cpu in posted:
        per = [turns[a].get(seq, {}) for a in agents]
        wakes = [t["wake"] - created for t in per if t.get("wake")]
        spawned = [t["spawned"] - created for t in per if "spawned" in t]
        got = [stored[(a, seq)] - created for a in agents if (a, seq) in stored]
        out["rounds"].append({
            "turns": len(spawned), "replies": len(got),
            "wake_ms": summary(wakes), "spawned_ms": summary(spawned), "reply_ms": summary(got),
            "cpu_s": cpu, "broker_cpu_s": broker_cpu,
            "stub_s": percentile(sorted(t["seconds"] for t in per if "seconds" in t), 50)})
    return out


# ---------------------------------------------------------------------------- idle, memory

def measure_idle(n: int, seconds: float, quiet_wait: float) -> dict:
    print(f"idle: {n} supervisors + broker, {seconds:g}s window ...", file=sys.stderr)
    agents = [f"i{i:02d}" for i in range(n)]
    fleet = start_fleet(agents, "#idle", wake="mentions", debug=False)
    try:
        watch = Watcher(fleet, agents)
        fleet.post("#idle", "warm-up: " + " ".join(f"@{a}" for a in agents))
        watch.turns_done(set(agents), timeout=120)  # each has run one turn, as in real life
        watch.close()
        out = idle_fleet(fleet, seconds, quiet_wait)
    finally:
        fleet.close()
    return out | {"agents": n}


# ---------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", nargs="?", default="all",
                   choices=["all", "baseline", "latency", "fanout", "idle", "memory"])
    p.add_argument("--posts", type=int, default=200, help="measured posts of the latency run")
    p.add_argument("--warmup", type=int, default=10, help="posts before those, not counted")
    p.add_argument("--gap", type=float, default=0.01, metavar="S",
                   help="pause after each turn, before the next post (default 0.01)")
    p.add_argument("--latency-budget", type=float, default=60.0, metavar="S",
                   help="stop posting after S seconds, whatever --posts says")
    p.add_argument("--agents", type=int, default=50, help="agents of the fan-out")
    p.add_argument("--rounds", type=int, default=3, help="fan-out posts, one after the other")
    p.add_argument("--idle-agents", type=int, default=20, help="supervisors of the idle fleet")
    p.add_argument("--idle-seconds", type=float, default=60.0, help="the idle window")
    p.add_argument("--probe-posts", type=int, default=100, metavar="N",
                   help="posts of a second latency run with the broker under the timing probe, "
                   "to split the wake at the end of the post's COMMIT (0: skip)")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="wait up to S seconds for other processes to go quiet before starting")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.monotonic()
    what = args.what
    res: dict = {"machine": machine(), "load": wait_for_quiet(args.quiet_wait)}
    if what in ("all", "baseline"):
        res["baseline"] = measure_baselines()
    if what in ("all", "latency"):
        res["latency"] = measure_latency(args.posts, args.warmup, args.gap, args.latency_budget)
        if args.probe_posts:
            res["latency_probe"] = measure_latency(args.probe_posts, args.warmup, args.gap,
                                                   args.latency_budget, probe=True)
    if what in ("all", "fanout"):
        wait_for_quiet(args.quiet_wait)
        res["fanout"] = measure_fanout(args.agents, args.rounds, 120, args.quiet_wait)
    if what in ("all", "idle", "memory"):
        wait_for_quiet(args.quiet_wait)
        res["idle"] = measure_idle(args.idle_agents, args.idle_seconds if what != "memory" else 0,
                                   args.quiet_wait)
    print(report(res))
    cmd = " ".join(["bench/dispatch.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python {cmd})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    lat = res.get("latency")
    broken = (lat and lat["incomplete"]) or (res.get("idle") and not res["idle"]["alive"]) or \
        any(r["replies"] < res["fanout"]["agents"] for r in res.get("fanout", {}).get("rounds", []))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
