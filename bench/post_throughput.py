"""Durable posts per second through the bus, and the round-trip latency of one post.

Every figure is of a real broker process (``python -m chatbox.broker --synchronous FULL``) on a temporary
workspace, over ``ipc://``, with posts whose reply means "on disk" (group commit: the broker
commits every batch of queued requests with one fsync before it answers any of them).

Phases, each against its own broker on a fresh workspace::

    baselines   raw apsw single-row commits/s and batched rows/s (WAL, synchronous=FULL);
                a bare DEALER -> ROUTER -> DEALER round trip (echo in another process)
    1 client    one BusClient, --posts sequential posts (one round trip each)
    8 clients   --clients processes, a BusClient each, sequential posts for --seconds
    pipelined   --clients processes, raw DEALER, --window posts in flight each, for --seconds
    sustained   the pipelined load for --sustain seconds more on the same database: does the
                rate hold as the history grows?
    breakdown   all of it again at half length against brokers with a timing probe: batch
                sizes, commits/s, and where each post's broker time goes
    durability  each broker is SIGKILLed after its phase; every acknowledged post must be in
                its database (the exit status says so)

Clients run in their own processes (spawned, ``bench/post_clients.py``): the GIL would
otherwise make the client the bottleneck. The run stops by itself: about a minute with the
defaults.

    .venv/bin/python bench/post_throughput.py [--posts 2000] [--clients 8] [--seconds 5]
        [--window 16] [--sustain 20] [--history N] [--synchronous FULL|NORMAL]
        [--what-if cache-64m] [--quiet-wait 20] [--py-spy FILE] [--no-breakdown] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (BenchBroker, machine, sqlite_commit_baseline, table,  # noqa: E402
                          wait_for_quiet, zmq_round_trip_baseline)
from bench.post_clients import (CHANNEL, pipelined_worker, run_clients,  # noqa: E402
                                sequential_worker, slices)
from bench.probe import NAMED, PROBE_FIELDS, WHAT_IFS  # noqa: E402
from bench.pyspy import PySpy  # noqa: E402


# ---------------------------------------------------------------------------- the breakdown

def breakdown(batches: list[list[float]], phase: dict) -> dict:
    """Probe records inside one phase's window: batch sizes, and µs per post by step."""
    rows = [b for b in batches if phase["start"] <= b[0] <= phase["end"]]
    n = sum(b[1] for b in rows) or 1
    wall = phase["end"] - phase["start"]
    sums = {f: sum(b[i] for b in rows) for i, f in enumerate(PROBE_FIELDS) if i >= 2}
    sums["python"] = sums["handle"] - sum(sums[f] for f in NAMED)
    busy = sums["drain"] + sums["handle"] + sums["commit"] + sums["send"]
    return {
        "batches": len(rows), "requests": int(n), "per_batch": n / max(1, len(rows)),
        "commits_per_s": len(rows) / wall, "posts_per_s": n / wall,
        "commit_ms": 1e3 * sums["commit"] / max(1, len(rows)),
        "busy": busy / wall,
        "us_per_post": {k: 1e6 * v / n for k, v in sums.items()},
    }


# ---------------------------------------------------------------------------- phases

def run_phases(args, *, probe: bool = False, scale: float = 1.0,
               py_spy: Path | None = None) -> dict:
    """Each phase against its own broker on a fresh workspace (``--history`` messages in it);
    the sustained phase continues on the pipelined phase's database. Returns the phases, the
    sustained phase, probe breakdowns, py-spy, and what was acknowledged and stored."""
    out = {"phases": {}, "sustained": {}, "probe": {}, "spy": None, "acked": 0, "stored": 0}
    plan = [
        ("1 client", sequential_worker, 1,
         dict(posts=max(1, int(args.posts * scale)), seconds=0)),
        (f"{args.clients} clients", sequential_worker, args.clients,
         dict(posts=0, seconds=args.seconds * scale)),
        (f"{args.clients} x window {args.window}", pipelined_worker, args.clients,
         dict(window=args.window, seconds=args.seconds * scale)),
    ]
    for i, (name, target, n, kw) in enumerate(plan):
        last = i == len(plan) - 1
        with BenchBroker(synchronous=args.synchronous, history=args.history, probe=probe,
                         what_if=tuple(args.what_if)) as broker:
            r = out["phases"][name] = run_clients(broker, target, n, **kw)
            r["slices"] = slices(r, 4, args.history + r["acked"] - r["posts"])
            acked = args.history + r["acked"]
            if last and args.sustain:
                seconds = args.sustain * scale
                spies: list[PySpy] = []
                sus = out["sustained"] = run_clients(
                    broker, pipelined_worker, args.clients, window=args.window, seconds=seconds,
                    on_start=(lambda: spies.append(PySpy(broker.pid, py_spy, seconds)))
                    if py_spy else None)
                sus["slices"] = slices(sus, 4, acked + sus["acked"] - sus["posts"])
                acked += sus["acked"]
                out["spy"] = spies[0] if spies else None
            if probe:
                broker.stop()
                batches = broker.probe_batches()
                out["probe"][name] = breakdown(batches, r)
                if last and args.sustain:
                    for piece in (sus["slices"][0], sus["slices"][-1]):
                        label = f"sustained, from {piece['stored_before'] // 1000}k"
                        out["probe"][label] = breakdown(batches, piece)
            else:
                broker.kill()  # a crash, not a clean stop: what was acknowledged must be on disk
            out["acked"] += acked
            out["stored"] += broker.count("SELECT count(*) FROM messages WHERE channel = ?",
                                          (CHANNEL,))
    return out


# ---------------------------------------------------------------------------- report

def phase_table(phases: dict) -> str:
    return table(
        ["phase", "posts", "posts/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
         "posts/s in the last ¼", "messages at the end", "broker CPU µs/post",
         "client CPU µs/post", "cores: broker + clients + others"],
        [[name, r["posts"], r["posts_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p90"],
          r["latency_ms"]["p99"], r["latency_ms"]["max"], r["slices"][-1]["posts_per_s"],
          r["slices"][-1]["stored_before"] + r["slices"][-1]["posts"],
          r["broker_cpu_us_per_post"], r["client_cpu_us_per_post"],
          f"{r['broker_cores']:.2f} + {r['client_cores']:.2f} + {r['other_cores']:.2f}"]
         for name, r in phases.items()])


def sustained_table(sustained: dict) -> str:
    return table(
        ["slice", "messages stored before", "posts", "posts/s", "p50 ms", "p99 ms"],
        [[f"{i + 1}/{len(sustained['slices'])}", s["stored_before"], s["posts"],
          s["posts_per_s"], s["latency_ms"]["p50"], s["latency_ms"]["p99"]]
         for i, s in enumerate(sustained["slices"])])


def ratios(base: dict, rtt: dict, phases: dict, sustained: dict) -> str:
    single = base["single_commits_per_s"]
    one, many, piped = phases.values()
    rows = [
        ["1 client posts/s ÷ SQLite single-row commits/s", one["posts_per_s"] / single],
        [f"{many['clients']} clients posts/s ÷ SQLite single-row commits/s",
         many["posts_per_s"] / single],
        [f"{many['clients']} clients posts/s ÷ 1 client posts/s",
         many["posts_per_s"] / one["posts_per_s"]],
        [f"{many['clients']} clients posts/s ÷ target 10,000", many["posts_per_s"] / 1e4],
        ["pipelined posts/s ÷ SQLite single-row commits/s", piped["posts_per_s"] / single],
        ["pipelined posts/s ÷ SQLite batched rows/s",
         piped["posts_per_s"] / base["batched_rows_per_s"]],
        ["1 client p50 ÷ ZeroMQ round trip p50", one["latency_ms"]["p50"] / rtt["p50"]],
        ["1 client p50 ÷ (ZeroMQ p50 + one SQLite commit)",
         one["latency_ms"]["p50"] / (rtt["p50"] + base["commit_ms"])],
    ]
    if sustained:
        first, last = piped["slices"][0], sustained["slices"][-1]
        rows.append(["pipelined: posts/s at the end of the sustained phase ÷ at the start",
                     last["posts_per_s"] / max(1e-9, first["posts_per_s"])])
    return table(["ratio", "value"], rows)


def breakdown_table(probe: dict) -> str:
    steps = [("drain (recv from ROUTER)", "drain"), ("decode envelope", "decode"),
             ("auth (token hash)", "auth"), ("SAVEPOINT / RELEASE", "sql_savepoint"),
             ("idempotency lookup + insert", "sql_idem"),
             ("INSERT message", "sql_insert"),
             ("wake query (subscribers of the channel)", "sql_wake"),
             ("other SQL (channel lookup, chain, channel update)", "sql_other"),
             ("batch housekeeping: full-text chunk, key pruning", "sql_index"),
             ("msgpack encode", "encode"), ("Python (routing, validation, structs)", "python"),
             ("COMMIT (WAL write + fsync)", "commit"), ("send replies + publish events", "send")]
    names = list(probe)
    rows = [["batches (commits)", *(probe[n]["batches"] for n in names)],
            ["posts per batch (mean)", *(probe[n]["per_batch"] for n in names)],
            ["commits/s", *(probe[n]["commits_per_s"] for n in names)],
            ["posts/s (probe on)", *(probe[n]["posts_per_s"] for n in names)],
            ["one COMMIT (ms)", *(probe[n]["commit_ms"] for n in names)],
            ["broker loop busy (not in poll)", *(f"{probe[n]['busy']:.0%}" for n in names)]]
    rows += [[label, *(probe[n]["us_per_post"][key] for n in names)] for label, key in steps]
    rows.append(["total broker µs per post",
                 *(sum(probe[n]["us_per_post"][k] for k in ("drain", "handle", "commit", "send"))
                   for n in names)])
    return table(["µs per post", *names], rows)


def report(mach: dict, load: float, base: dict, rtt: dict, run: dict, probe: dict | None,
           spy: tuple | None, args) -> str:
    phases, sustained = run["phases"], run["sustained"]
    out = []
    if args.what_if:
        out += [f"**What-if run ({', '.join(args.what_if)}): the broker ran with a proposed "
                "change laid over it; these are not figures of the product as shipped.**", ""]
    out += ["## Machine", ""]
    out += [f"- {k}: {v}" for k, v in mach.items()]
    out += [f"- load from other processes just before the run: {load:.0%} of all CPUs"]
    out += ["", "## Baselines (same machine, same run)", "",
            table(["baseline", "figure"], [
                [f"SQLite single-row commits/s (WAL, synchronous={args.synchronous})",
                 base["single_commits_per_s"]],
                ["SQLite one commit (ms)", base["commit_ms"]],
                ["SQLite rows/s in batches of 1000", base["batched_rows_per_s"]],
                ["ZeroMQ DEALER/ROUTER round trip p50 (ms)", rtt["p50"]],
                ["ZeroMQ DEALER/ROUTER round trip p99 (ms)", rtt["p99"]],
            ])]
    start = f"{args.history:,} messages" if args.history else "an empty database"
    out += ["", f"## Posts through the bus (synchronous={args.synchronous}; each phase starts "
            f"a broker on {start})", "", phase_table(phases)]
    if sustained:
        out += ["", f"## Sustained: {args.clients} x window {args.window} for {args.sustain:g} s "
                "more, on the pipelined phase's database", "", sustained_table(sustained)]
    out += ["", "## Ratios", "", ratios(base, rtt, phases, sustained)]
    if probe:
        out += ["", "## Where the broker's time goes (probe run, half length, µs per post)", "",
                breakdown_table(probe)]
    if spy:
        total, rows = spy
        out += ["", f"## py-spy of the broker, sustained phase ({total} samples, wall clock, "
                "idle included)", "", table(["line", "self", "its function, inclusive"],
                                            [[f, f"{own:.1%}", f"{inc:.1%}"]
                                             for f, own, inc in rows])]
    verdict = ("every acknowledged post is there" if run["stored"] >= run["acked"]
               else "POSTS WERE LOST")
    out += ["", "## Durability", "",
            f"Each broker SIGKILLed after its phase: {run['acked']:,} posts acknowledged, "
            f"{run['stored']:,} in the databases: {verdict}."]
    return "\n".join(out)


# ---------------------------------------------------------------------------- main

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--posts", type=int, default=2000, help="posts of the 1-client phase")
    p.add_argument("--clients", type=int, default=8, help="client processes (default 8)")
    p.add_argument("--seconds", type=float, default=5.0, help="length of each concurrent phase")
    p.add_argument("--window", type=int, default=16, help="posts in flight per pipelined client")
    p.add_argument("--sustain", type=float, default=20.0, metavar="S",
                   help="then S seconds more of pipelined load on the same database (0: skip)")
    p.add_argument("--history", type=int, default=0, metavar="N",
                   help="start each broker on a database already holding N messages")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--what-if", action="append", default=[], choices=sorted(WHAT_IFS),
                   help="measure a proposed broker change laid over every broker of the run "
                   "(bench/probe.py WHAT_IFS); never a figure of the product")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="wait up to S seconds for other processes to go quiet before starting")
    p.add_argument("--py-spy", type=Path, metavar="FILE",
                   help="record the broker with py-spy during the sustained phase (raw stacks)")
    p.add_argument("--no-breakdown", action="store_true", help="skip the probe run")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    t0 = time.monotonic()
    mach = machine()
    load = wait_for_quiet(args.quiet_wait)
    print(f"baselines ... (other processes use {load:.0%} of the CPUs)", file=sys.stderr)
    base = sqlite_commit_baseline(synchronous=args.synchronous)
    rtt = zmq_round_trip_baseline()

    print("posts ...", file=sys.stderr)
    run = run_phases(args, py_spy=args.py_spy)
    spy_summary = None
    if run["spy"] is not None:
        err = run["spy"].wait()
        if err:
            print(f"py-spy: {err}", file=sys.stderr)
        else:
            spy_summary = run["spy"].summary(12)
    probe = None
    if not args.no_breakdown:
        print("breakdown (probe, half length) ...", file=sys.stderr)
        probe = run_phases(args, probe=True, scale=0.5)["probe"]

    print(report(mach, load, base, rtt, run, probe, spy_summary, args))
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python "
          f"bench/post_throughput.py {' '.join(sys.argv[1:])})")
    if args.json:
        def strip(r: dict) -> dict:
            return {k: v for k, v in r.items() if k not in ("start", "end", "timeline")}
        args.json.write_text(json.dumps({
            "machine": mach, "background_load": load, "sqlite": base, "zmq_rtt_ms": rtt,
            "phases": {k: strip(v) for k, v in run["phases"].items()},
            "sustained": strip(run["sustained"]) if run["sustained"] else None,
            "probe": probe, "acked": run["acked"], "stored": run["stored"],
            "py_spy": spy_summary, "args": {k: str(v) for k, v in vars(args).items()}},
            indent=2), encoding="utf-8")
    errors = sum(r["errors"] for r in [*run["phases"].values(), run["sustained"]] if r)
    return 1 if errors or run["stored"] < run["acked"] else 0


if __name__ == "__main__":
    sys.exit(main())
