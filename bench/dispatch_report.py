"""The Markdown report of ``bench/dispatch.py``: tables of what it measured, the targets of
issue 3 beside them, and ratios to the baselines of the same run."""

from __future__ import annotations

import os

from bench.common import table
from bench.idle import idle_section, memory_table, noise

TARGETS_MS = {"wake_p99": 2.0, "spawned_p99": 10.0, "e2e_p50": 50.0}
TARGET_IDLE_S_PER_MIN = 0.05
MS = 1e3

STUB_AS_RUN = "the stub, 1-message batch, as a supervisor runs it (its argv, env, stdin)"
STUB_THROUGH_RUNNER = "the same through the runner (run_capped: start to end)"
RUNNER_POPEN = "run_capped of /bin/true: call -> on_start (Popen of setpriv returned)"
BARE_POPEN = "Popen of /bin/true returns: own session, no preexec_fn (vfork)"

LATENCY_ROWS = [
    ("post sent -> reply to the poster (post round trip)", "post_rtt"),
    ("**created_at -> wake received**", "wake"),
    ("poster's reply -> wake received (lower bound from the commit)", "ack_to_wake"),
    ("wake -> turn_start (Claim round trip + commit)", "claim"),
    ("turn_start -> turn_spawned (build + Popen of setpriv)", "spawn"),
    ("**created_at -> turn subprocess started**", "spawned"),
    ("stub turn, Popen to pipes drained (runner)", "stub"),
    ("turn line -> reply stored (TurnReport round trip)", "report"),
    ("**created_at -> stub's reply stored (end to end)**", "e2e"),
]
PROBE_ROWS = [
    ("created_at -> wake received", "wake"),
    ("the post's batch: created_at -> COMMIT began (handling)", "post_handle"),
    ("– of which SQL statements (INSERT, wake query, transition, audit...)", "post_sql"),
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


def baseline_section(base: dict) -> list[str]:
    rows = [[k, v["n"], v["p50"], v["p90"], v["p99"], v["max"]]
            for k, v in base["spawn"].items()]
    rows += [[k, v["n"], v["p50"], v["p90"], v["p99"], v["max"]]
             for k, v in base["python"].items()]
    rtt = base["zmq_rtt_ms"]
    rows += [["ZeroMQ DEALER/ROUTER round trip (ipc)", 3000, rtt["p50"], rtt["p90"],
              rtt["p99"], rtt["max"]],
             ["SQLite single-row commit (WAL, synchronous=FULL), mean", "-",
              base["sqlite_commit_ms"], "-", "-", "-"]]
    return ["", "### Baselines (same machine, same run; ms)", "",
            table(["baseline", "n", "p50", "p90", "p99", "max"], rows), "",
            f"The stub's argv, as a supervisor builds it: `{base['stub_argv']}`.", "",
            noise(base["others_cores"]), "",
            table(["interpreter memory (MiB)", "RSS", "PSS"],
                  [[k, v["rss"], v["pss"]] for k, v in base["rss"].items()])]


def fanout_section(fan: dict) -> list[str]:
    rows = [[i + 1, r["turns"], r["replies"], r["wake_ms"]["p50"], r["wake_ms"]["max"],
             r["spawned_ms"]["p50"], r["spawned_ms"]["max"], r["reply_ms"]["p50"],
             r["reply_ms"]["max"], r["stub_s"] * MS, r["cpu_s"],
             r["cpu_s"] / (os.cpu_count() or 1) * MS, r["broker_cpu_s"]]
            for i, r in enumerate(fan["rounds"])]
    return ["", f"### Fan-out: one post to {fan['agents']} agents, a supervisor each "
            f"({fan['supervisors_start_s']:.1f} s to start them all; ms after the post's "
            "created_at)", "",
            table(["round", "turns", "replies", "wake p50", "last wake", "spawned p50",
                   "**last turn started**", "reply p50", "**last reply stored**",
                   "stub turn p50", "CPU s (all, turns incl.)",
                   f"that CPU ÷ {os.cpu_count()} CPUs (ms)", "broker CPU s"], rows),
            "", noise(fan["others_cores"])]


def ratios_section(s: dict, b: dict) -> list[str]:
    """``s``: the latency run's summaries; ``b``: the baselines."""
    stub = b["python"][STUB_AS_RUN]
    runner_pop = b["spawn"][RUNNER_POPEN]
    bare_pop = b["spawn"][BARE_POPEN]
    return ["", "### Ratios", "", table(["ratio", "value"], [
        ["end to end p50 ÷ stub alone p50 (as a supervisor runs it)", s["e2e"]["p50"] /
         stub["p50"]],
        ["end to end p50 − stub turn p50 (ms: what broker and supervisor add)",
         s["e2e"]["p50"] - s["stub"]["p50"]],
        ["stub alone p50 ÷ python -I -S -c pass p50", stub["p50"] /
         b["python"]["python -I -S -c pass"]["p50"]],
        ["turn_start -> turn_spawned p50 ÷ run_capped's Popen p50", s["spawn"]["p50"] /
         runner_pop["p50"]],
        ["run_capped's Popen p50 ÷ bare Popen without preexec_fn p50", runner_pop["p50"] /
         bare_pop["p50"]],
        ["created_at -> wake p50 ÷ one SQLite commit", s["wake"]["p50"] /
         b["sqlite_commit_ms"]],
        ["wake -> turn_start p50 ÷ (ZeroMQ round trip p50 + one SQLite commit)",
         s["claim"]["p50"] / (b["zmq_rtt_ms"]["p50"] + b["sqlite_commit_ms"])],
    ])]


def report(res: dict) -> str:
    out = ["### Machine", "", *(f"- {k}: {v}" for k, v in res["machine"].items()),
           f"- load from other processes before the run: {res['load']:.0%} of all CPUs"]
    verdicts = []
    base = res.get("baseline")
    if base:
        out += baseline_section(base)
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
    fan = res.get("fanout")
    if fan:
        out += fanout_section(fan)
    idle = res.get("idle")
    if idle and idle["window"]:
        text, per_min = idle_section(idle)
        out += text
        verdicts.append(("idle CPU, whole fleet", per_min, TARGET_IDLE_S_PER_MIN, "s/min"))
    mems = []
    if idle:
        mems.append((f"idle fleet ({idle['agents']} supervisors, one turn each)", idle["memory"]))
    if fan and "memory_after" in fan:
        turns = len(fan["rounds"])
        mems.append((f"fan-out fleet ({fan['agents']} supervisors, after {turns} "
                     f"turn{'s' if turns != 1 else ''} each)", fan["memory_after"]))
    if mems:
        out += ["", "### Memory (MiB)", "", memory_table(mems)]
    if verdicts:
        out += ["", "### Target vs reached", "",
                table(["figure", "reached", "target", "reached ÷ target", "verdict"],
                      [[name, f"{got:.3g} {unit}", f"{want:g} {unit}", got / want,
                        "met" if got < want else "MISSED"] for name, got, want, unit in verdicts])]
    if base and lat:
        out += ratios_section(lat["summary"], base)
    return "\n".join(out)
