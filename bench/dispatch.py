"""Dispatch (issue 3): how fast a post wakes an agent and starts its turn, a fan-out to many
agents, what an idle fleet costs, and the memory of a supervisor.

Every figure is of real processes from ``tests/fleet.py``: ``python -m broker`` and one
``python -m supervisor --agent A`` per agent, stub engine, on a temporary workspace, over ipc.
The run stops by itself: about three minutes with the defaults.

    .venv/bin/python bench/dispatch.py [all|baseline|latency|fanout|idle|memory]
        [--posts 200] [--warmup 10] [--gap 0.01] [--probe-posts 100] [--agents 50]
        [--rounds 3] [--idle-agents 20] [--idle-seconds 60] [--quiet-wait 20]
        [--what-if no-heartbeat|spawn-setpriv|stub-isolated]... [--json FILE]

    baseline  same machine, same run: Popen of /bin/true (as the runner calls it, and without
              its preexec_fn), ``python -c pass`` with and without site, the stub with a
              one-message batch on stdin (the exact argv, env and stdin a supervisor gives it),
              one SQLite commit, one ZeroMQ round trip, the memory of a bare interpreter and of
              one that imported what a supervisor imports
    latency   one agent; --posts human posts, one at a time, each after the agent is ASLEEP
              again (the bench follows the broker's agent events, it never polls): the wake,
              the turn's subprocess started, end to end to the stub's reply stored. Then
              --probe-posts more against a broker under ``bench/common.py``'s timing probe,
              which splits the wake and the claim at the broker's COMMITs
    fanout    --agents agents, each with its own supervisor, all subscribed to one channel;
              one post that mentions them all, --rounds times: until the last turn's subprocess
              started and the last reply stored, and the CPU it took
    idle      --idle-agents supervisors and the broker, after one turn each and once the
              machine is quiet: their CPU and wake-ups over --idle-seconds, and memory
    memory    the idle fleet without the window: RSS/PSS/USS per supervisor and of the broker

``--what-if`` measures a proposed product change laid over the processes by monkeypatching
(``WHAT_IFS``), after the product as shipped: never a figure of the product itself.

One post's timeline, and the clock each point is read from (one machine, one clock)::

    created_at      the broker's time.time() as the batch holding the post began: handling
                    (INSERT, dispatcher, audit), COMMIT (fsync), replies, wake published
    wake            supervisor log line "wake" (debug): WakeEvent received and decoded
    turn_start      Claim round trip done: the broker committed WAKING -> BUSY with the batch
    turn_spawned    prompt and argv built, Popen returned (fork, exec done)
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
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (PROBE_FIELDS, latency_summary, machine, percentile,  # noqa: E402
                          short_tempdir, sqlite_commit_baseline, table, wait_for_quiet,
                          zmq_round_trip_baseline)
from bench.idle import (Others, cpu_sample, idle_fleet, idle_section, memory,  # noqa: E402
                        memory_table, noise, python_rss_baselines)
from bus import wire  # noqa: E402
from bus.client import BusClient  # noqa: E402
from tests.fleet import Fleet, Proc  # noqa: E402

TARGETS_MS = {"wake_p99": 2.0, "spawned_p99": 10.0, "e2e_p50": 50.0}
TARGET_IDLE_S_PER_MIN = 0.05
# The default turn budget (30 an hour) would pause an agent of a 200-post run; nothing else
# differs from the defaults.
CONFIG = "[limits]\nmax_turns_per_hour = 1000000\n"
MS = 1e3


# ---------------------------------------------------------------------------- helpers

def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def summary(values_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds, and n."""
    s = latency_summary(values_s)
    s["n"] = len(values_s)
    return s


def _no_heartbeat() -> None:
    """ZMTP heartbeats off on every socket of the process (``HEARTBEAT_IVL`` 0: libzmq sends
    no PING, so the TTL and timeout it would carry never apply)."""
    wire.HEARTBEAT_IVL_MS = 0


def _spawn_setpriv() -> None:
    """Turns spawned without ``preexec_fn``, so that Popen may vfork instead of fork and run no
    Python in the child: ``setpriv --pdeathsig KILL --`` sets the parent-death signal, then
    execs the turn's command (the signal survives exec)."""
    from supervisor import runner, turn

    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    orig = runner.run_turn
    runner._group_kwargs = lambda: {"start_new_session": True}

    def run_turn(spec, **kw):
        spec.argv = [setpriv, "--pdeathsig", "KILL", "--", *spec.argv]
        return orig(spec, **kw)
    turn.run_turn = run_turn


def _stub_isolated() -> None:
    """The stub started as ``python -I -S .../supervisor/stub.py``: no site (no .pth files, no
    editable-install finder), no PYTHONPATH to search; it imports the standard library only."""
    from supervisor import engines, stub

    orig = engines._BUILDERS["stub"]

    def build(**kw):
        argv, stdin, env, mode = orig(**kw)  # [python, -m, supervisor.stub, options...]
        return [argv[0], "-I", "-S", stub.__file__, *argv[3:]], stdin, env, mode
    engines._BUILDERS["stub"] = build


WHAT_IFS = {"no-heartbeat": _no_heartbeat, "spawn-setpriv": _spawn_setpriv,
            "stub-isolated": _stub_isolated}
# no-heartbeat concerns every process and is measured on the idle fleet; the others change how a
# supervisor runs a turn and are measured by the latency run
FLEET_WHAT_IFS = {"no-heartbeat"}


def launcher(what_ifs: list[str], program: str) -> list[str]:
    """The argv that starts ``program`` (broker | supervisor), with ``what_ifs`` laid over it."""
    if not what_ifs:
        return [sys.executable, "-m", program]
    return [sys.executable, str(Path(__file__).resolve()), "_launch", ",".join(what_ifs), program]


def _launch(argv: list[str]) -> int:
    """``dispatch.py _launch WHAT_IF[,WHAT_IF] broker|supervisor ARGS...`` (see ``launcher``)."""
    what_ifs, program, *rest = argv
    for name in what_ifs.split(","):
        WHAT_IFS[name]()
    if program == "broker":
        from broker.main import main as run
    else:
        from supervisor.main import main as run
    return run(rest)


def start_fleet(agents: list[str], channel: str, *, wake: str, debug: bool,
                what_ifs: list[str] = (), probe: bool = False) -> Fleet:
    """A broker, ``agents`` subscribed to ``channel``, one supervisor each, all started at once
    (then each waited for: its "ready" line, bounded). ``probe``: the broker runs under
    ``bench/common.py``'s timing probe, which writes ``probe.json`` in the workspace on stop."""
    fleet = Fleet()
    try:
        fleet.write_config(CONFIG)
        if probe:
            argv = [sys.executable, str(ROOT / "bench" / "common.py"), "broker", "--probe",
                    str(fleet.root / "probe.json"), "--"]
        elif set(what_ifs) & FLEET_WHAT_IFS:
            argv = launcher(sorted(set(what_ifs) & FLEET_WHAT_IFS), "broker")
        else:
            argv = None
        if argv is None:
            fleet.start_broker()
        else:
            fleet.broker = Proc("broker", argv, fleet.ws, fleet.logs)
            fleet.broker.wait_log("ready")
        fleet.client().call(wire.CreateChannel(name=channel, topic="dispatch benchmark"))
        for a in agents:
            fleet.add_agent(a, channel, wake=wake)
        extra = ["--log-level", "debug"] if debug else []
        for a in agents:
            fleet.supervisors[a] = Proc(f"supervisor-{a}", [*launcher(list(what_ifs),
                                                                      "supervisor"),
                                                            "--agent", a, *extra],
                                        fleet.ws, fleet.logs)
        for proc in fleet.supervisors.values():
            proc.wait_log("ready", timeout=120)
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
        deadline = time.monotonic() + timeout
        while done != agents:
            left = deadline - time.monotonic()
            got = self.client.recv_event(left) if left > 0 else None
            if got is None:
                raise RuntimeError(f"{len(agents - done)} agents did not finish a turn within "
                                   f"{timeout:g}s: {sorted(agents - done)[:5]}")
            ev = got[1]
            if isinstance(ev, wire.AgentEvent) and ev.agent in agents:
                if ev.state == "BUSY":
                    busy.add(ev.agent)
                elif ev.state == "ASLEEP" and ev.agent in busy:
                    done.add(ev.agent)

    def close(self) -> None:
        self.client.close()


def turns_by_seq(proc: Proc) -> dict[int, dict]:
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


# ---------------------------------------------------------------------------- baselines

def timed_runs(n: int, fn) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spawn_baselines(n: int = 200) -> dict:
    """How long Popen takes to return (the child has exec'd) for /bin/true, two ways."""
    from supervisor.runner import _group_kwargs

    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 close_fds=True, bufsize=0)
    ways = {"runner's Popen (own session + preexec_fn PDEATHSIG: fork)": _group_kwargs(),
            "Popen, own session, no preexec_fn (vfork)": {"start_new_session": True}}
    out = {}
    for name, kw in ways.items():
        procs = []
        lat = timed_runs(n, lambda: procs.append(subprocess.Popen(["/bin/true"], **pipes, **kw)))
        for p in procs:
            p.communicate()
        out[name] = summary(lat)
    return out


def python_baselines(n: int = 30) -> dict:
    """A bare ``python -c pass``; the stub on a one-message batch, as a supervisor runs it."""
    from chatbox.config import AgentConfig
    from chatbox.workspace import Workspace
    from guardrails.limits import Limits
    from supervisor.runner import run_turn
    from supervisor.turn import TurnRunner

    env = {"PATH": os.environ.get("PATH", "")}
    bare = timed_runs(n, lambda: subprocess.run([sys.executable, "-c", "pass"], env=env,
                                                check=True, timeout=30))
    no_site = timed_runs(n, lambda: subprocess.run([sys.executable, "-I", "-S", "-c", "pass"],
                                                   env=env, check=True, timeout=30))
    root = short_tempdir("cbxp")
    try:
        runner = TurnRunner("bench", AgentConfig(), Limits(), Workspace(root))
        msg = wire.Message(seq=1, channel="#bench", author="alice", kind="chat",
                           body="a baseline message", chain=1, hop=0, created_at=time.time())
        spec, _ = runner.build(1, [msg])
        plain = timed_runs(n, lambda: subprocess.run(spec.argv, input=spec.stdin, env=spec.env,
                                                     cwd=spec.cwd, capture_output=True,
                                                     check=True, timeout=30))
        runs = [run_turn(spec) for _ in range(n)]
        stub_file = [sys.executable, "-I", "-S", str(ROOT / "supervisor" / "stub.py"),
                     *spec.argv[3:]]
        isolated = timed_runs(n, lambda: subprocess.run(stub_file, input=spec.stdin, env=env,
                                                        cwd=spec.cwd, capture_output=True,
                                                        check=True, timeout=30))
        build = timed_runs(n, lambda: runner.build(1, [msg]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"python -c pass": summary(bare),
            "python -I -S -c pass (no site: no .pth files, no editable-install finder)":
                summary(no_site),
            "python -m supervisor.stub, 1-message batch (subprocess.run)": summary(plain),
            "the same through the runner (run_turn: start to end)":
                summary([r.ended_at - r.started_at for r in runs]),
            "what-if: python -I -S supervisor/stub.py, same batch": summary(isolated),
            "TurnRunner.build (prompt, argv, env)": summary(build)}


def measure_baselines() -> dict:
    print("baselines ...", file=sys.stderr)
    others = Others()
    spawn = spawn_baselines()
    py = python_baselines()
    sqlite = sqlite_commit_baseline(seconds=1.0)
    rtt = zmq_round_trip_baseline(n=3000)
    rss = python_rss_baselines(sys.executable, "supervisor.main")
    return {"spawn": spawn, "python": py, "sqlite_commit_ms": sqlite["commit_ms"],
            "zmq_rtt_ms": rtt, "rss": rss, "bench_rss_mb": memory(os.getpid())["rss"],
            "others_cores": others.cores()}


# ---------------------------------------------------------------------------- latency

def measure_latency(posts: int, warmup: int, gap: float, budget: float,
                    what_ifs: list[str] = (), probe: bool = False) -> dict:
    """``posts`` human posts to one agent, each once it is ASLEEP again. ``probe``: the broker
    runs under the timing probe, to split created_at -> wake at the end of the post's COMMIT."""
    label = (" (what-if: " + ", ".join(what_ifs) + ")" if what_ifs else
             " (broker under the timing probe)" if probe else "")
    print(f"latency{label}: {warmup} + {posts} posts to one agent ...", file=sys.stderr)
    channel = "#lat"
    fleet = start_fleet(["lat"], channel, wake="all", debug=True, what_ifs=what_ifs, probe=probe)
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
            "what_ifs": list(what_ifs), "probe": probe,
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
    path = fleet.root / "probe.json"
    return Commits(json.loads(path.read_text(encoding="utf-8"))["batches"] if path.exists()
                   else [])


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

def measure_idle(n: int, seconds: float, quiet_wait: float, what_ifs: list[str] = ()) -> dict:
    label = " (what-if: " + ", ".join(what_ifs) + ")" if what_ifs else ""
    print(f"idle{label}: {n} supervisors + broker, {seconds:g}s window ...", file=sys.stderr)
    agents = [f"i{i:02d}" for i in range(n)]
    fleet = start_fleet(agents, "#idle", wake="mentions", debug=False, what_ifs=what_ifs)
    try:
        watch = Watcher(fleet, agents)
        fleet.post("#idle", "warm-up: " + " ".join(f"@{a}" for a in agents))
        watch.turns_done(set(agents), timeout=120)  # each has run one turn, as in real life
        watch.close()
        out = idle_fleet(fleet, seconds, quiet_wait)
    finally:
        fleet.close()
    return out | {"agents": n, "what_if": ", ".join(what_ifs) or None}


# ---------------------------------------------------------------------------- report

LATENCY_ROWS = [
    ("post sent -> reply to the poster (post round trip)", "post_rtt"),
    ("**created_at -> wake received**", "wake"),
    ("poster's reply -> wake received (lower bound from the commit)", "ack_to_wake"),
    ("wake -> turn_start (Claim round trip + commit)", "claim"),
    ("turn_start -> turn_spawned (build + Popen)", "spawn"),
    ("**created_at -> turn subprocess started**", "spawned"),
    ("stub turn, Popen to pipes drained (runner)", "stub"),
    ("turn line -> reply stored (TurnReport round trip)", "report"),
    ("**created_at -> stub's reply stored (end to end)**", "e2e"),
]
PROBE_ROWS = [
    ("created_at -> wake received", "wake"),
    ("the post's batch: created_at -> COMMIT began (handling)", "post_handle"),
    ("– of which SQL statements (INSERT + FTS, wake query, transition, audit...)", "post_sql"),
    ("the post's COMMIT (WAL write + fsync)", "commit"),
    ("after the COMMIT: replies sent, events published", "post_send"),
    ("**the post's COMMIT ended -> wake received**", "commit_end_to_wake"),
    ("wake received -> the Claim's batch began", "wake_to_claim"),
    ("the Claim's batch: handling", "claim_handle"),
    ("– of which SQL statements (due batch, guardrail history, turn, offsets)", "claim_sql"),
    ("the Claim's COMMIT", "claim_commit"),
    ("the Claim's COMMIT ended -> turn_start logged", "claim_end_to_start"),
    ("(clock check: batch began -> created_at, should be ~0)", "clock_check"),
]


def latency_section(lat: dict, title: str, only: list[tuple[str, str]] = LATENCY_ROWS) -> list:
    s = lat["summary"]
    rows = [[label, s[k]["n"], s[k]["p50"], s[k]["p90"], s[k]["p99"], s[k]["max"]]
            for label, k in only if k in s]
    return ["", f"{title} ({lat['incomplete']} incomplete; ms)", "",
            table(["from -> to", "n", "p50", "p90", "p99", "max"], rows),
            "", noise(lat["others_cores"])]


def report(res: dict, args) -> str:
    out = ["### Machine", "", *(f"- {k}: {v}" for k, v in res["machine"].items()),
           f"- load from other processes before the run: {res['load']:.0%} of all CPUs"]
    verdicts = []
    base = res.get("baseline")
    if base:
        rows = [[f"Popen returns: {k}", v["n"], v["p50"], v["p90"], v["p99"], v["max"]]
                for k, v in base["spawn"].items()]
        rows += [[k, v["n"], v["p50"], v["p90"], v["p99"], v["max"]]
                 for k, v in base["python"].items()]
        rtt = base["zmq_rtt_ms"]
        rows += [["ZeroMQ DEALER/ROUTER round trip (ipc)", 3000, rtt["p50"], rtt["p90"],
                  rtt["p99"], rtt["max"]],
                 ["SQLite single-row commit (WAL, synchronous=FULL), mean", "-",
                  base["sqlite_commit_ms"], "-", "-", "-"]]
        out += ["", "### Baselines (same machine, same run; ms)", "",
                table(["baseline", "n", "p50", "p90", "p99", "max"], rows), "",
                noise(base["others_cores"]), "",
                table(["interpreter memory (MiB)", "RSS", "PSS"],
                      [[k, v["rss"], v["pss"]] for k, v in base["rss"].items()])]
    lat = res.get("latency")
    if lat:
        out += latency_section(lat, f"### Latency: one agent, {lat['posts']} posts one at a time")
        s = lat["summary"]
        verdicts += [("wake p99", s["wake"]["p99"], TARGETS_MS["wake_p99"], "ms"),
                     ("turn subprocess started p99", s["spawned"]["p99"],
                      TARGETS_MS["spawned_p99"], "ms"),
                     ("post -> stub reply p50", s["e2e"]["p50"], TARGETS_MS["e2e_p50"], "ms")]
    if res.get("latency_probe"):
        out += latency_section(res["latency_probe"], "### Where the wake's time goes: the same "
                               "with the broker under the timing probe (a few µs per request "
                               "slower; for the split only)", only=PROBE_ROWS)
    if res.get("latency_what_if"):
        wi = res["latency_what_if"]
        out += latency_section(wi, f"### Latency — **what-if {', '.join(wi['what_ifs'])}, not "
                               "the product as shipped**")
    fan = res.get("fanout")
    if fan:
        rows = [[i + 1, r["turns"], r["replies"], r["wake_ms"]["p50"], r["wake_ms"]["max"],
                 r["spawned_ms"]["p50"], r["spawned_ms"]["max"], r["reply_ms"]["p50"],
                 r["reply_ms"]["max"], r["stub_s"] * MS, r["cpu_s"],
                 r["cpu_s"] / (os.cpu_count() or 1) * MS, r["broker_cpu_s"]]
                for i, r in enumerate(fan["rounds"])]
        out += ["", f"### Fan-out: one post to {fan['agents']} agents, a supervisor each "
                f"({fan['supervisors_start_s']:.1f} s to start them all; ms after the post's "
                "created_at)", "",
                table(["round", "turns", "replies", "wake p50", "last wake", "spawned p50",
                       "**last turn started**", "reply p50", "**last reply stored**",
                       "stub turn p50", "CPU s (all, turns incl.)",
                       f"that CPU ÷ {os.cpu_count()} CPUs (ms)", "broker CPU s"], rows),
                "", noise(fan["others_cores"])]
    idle = res.get("idle")
    for key in ("idle", "idle_what_if"):
        if res.get(key) and res[key]["window"]:
            text, per_min = idle_section(res[key])
            out += text
            if key == "idle":
                verdicts.append(("idle CPU, whole fleet", per_min, TARGET_IDLE_S_PER_MIN,
                                 "s/min"))
    mems = []
    if idle:
        mems.append((f"idle fleet ({idle['agents']} supervisors, one turn each)", idle["memory"]))
    if fan and "memory_after" in fan:
        mems.append((f"fan-out fleet ({fan['agents']} supervisors, after {len(fan['rounds'])} "
                     "turns each)", fan["memory_after"]))
    if mems:
        out += ["", "### Memory (MiB)", "", memory_table(mems)]
    if verdicts:
        out += ["", "### Target vs reached", "",
                table(["figure", "reached", "target", "reached ÷ target", "verdict"],
                      [[name, f"{got:.3g} {unit}", f"{want:g} {unit}", got / want,
                        "met" if got < want else "MISSED"] for name, got, want, unit in verdicts])]
    if base and lat:
        s, b = lat["summary"], base
        stub_base = b["python"]["python -m supervisor.stub, 1-message batch (subprocess.run)"]
        runner_pop = next(v for k, v in b["spawn"].items() if k.startswith("runner"))
        bare_pop = next(v for k, v in b["spawn"].items() if "vfork" in k)
        out += ["", "### Ratios", "", table(["ratio", "value"], [
            ["end to end p50 ÷ stub alone p50 (subprocess.run)", s["e2e"]["p50"] /
             stub_base["p50"]],
            ["end to end p50 − stub turn p50 (ms: what broker and supervisor add)",
             s["e2e"]["p50"] - s["stub"]["p50"]],
            ["stub alone p50 ÷ python -c pass p50", stub_base["p50"] /
             b["python"]["python -c pass"]["p50"]],
            ["turn_start -> turn_spawned p50 ÷ runner's Popen p50", s["spawn"]["p50"] /
             runner_pop["p50"]],
            ["runner's Popen p50 ÷ Popen without preexec_fn p50", runner_pop["p50"] /
             bare_pop["p50"]],
            ["created_at -> wake p50 ÷ one SQLite commit", s["wake"]["p50"] /
             b["sqlite_commit_ms"]],
            ["wake -> turn_start p50 ÷ (ZeroMQ round trip p50 + one SQLite commit)",
             s["claim"]["p50"] / (b["zmq_rtt_ms"]["p50"] + b["sqlite_commit_ms"])],
        ])]
    return "\n".join(out)


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
    p.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IFS),
                   help="measure again with a proposed change laid over the processes: "
                   "no-heartbeat (idle fleet), spawn-setpriv and stub-isolated (latency); a "
                   "what-if is never a figure of the product as shipped")
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
        turn_what_ifs = [w for w in args.what_if if w not in FLEET_WHAT_IFS]
        if turn_what_ifs:
            res["latency_what_if"] = measure_latency(args.posts, args.warmup, args.gap,
                                                     args.latency_budget, turn_what_ifs)
    if what in ("all", "fanout"):
        wait_for_quiet(args.quiet_wait)
        res["fanout"] = measure_fanout(args.agents, args.rounds, 120, args.quiet_wait)
    if what in ("all", "idle", "memory"):
        wait_for_quiet(args.quiet_wait)
        res["idle"] = measure_idle(args.idle_agents, args.idle_seconds if what != "memory" else 0,
                                   args.quiet_wait)
        fleet_what_ifs = [w for w in args.what_if if w in FLEET_WHAT_IFS]
        if fleet_what_ifs and what != "memory":
            wait_for_quiet(args.quiet_wait)
            res["idle_what_if"] = measure_idle(args.idle_agents, args.idle_seconds,
                                               args.quiet_wait, fleet_what_ifs)
    print(report(res, args))
    cmd = " ".join(["bench/dispatch.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python {cmd})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    lat = res.get("latency")
    broken = (lat and lat["incomplete"]) or (res.get("idle") and not res["idle"]["alive"]) or \
        any(r["replies"] < res["fanout"]["agents"] for r in res.get("fanout", {}).get("rounds", []))
    return 1 if broken else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_launch"]:
        sys.exit(_launch(sys.argv[2:]))
    sys.exit(main())
