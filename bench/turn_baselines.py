"""Baselines for ``bench/dispatch.py``, measured on the same machine in the same run: what it
costs to start a process (through the runner and bare), to start Python and the stub, one
SQLite commit, one ZeroMQ round trip, and the memory of an interpreter."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from bench.common import (latency_summary, short_tempdir, sqlite_commit_baseline,
                          zmq_round_trip_baseline)
from bench.dispatch_report import (BARE_POPEN, RUNNER_POPEN, STUB_AS_RUN,
                                   STUB_THROUGH_RUNNER)
from bench.idle import Others, memory, python_rss_baselines
from chatbox.bus import wire


def summary(values_s: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds, and n."""
    s = latency_summary(values_s)
    s["n"] = len(values_s)
    return s


def timed_runs(n: int, fn) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def spawn_baselines(n: int = 200) -> dict:
    """How long it takes to start /bin/true: Popen returning (the child has exec'd) through the
    runner and two plain ways, and a whole run with and without setpriv in front."""
    from chatbox.supervisor.capped import TurnSpec, run_capped

    pipes = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                 close_fds=True, bufsize=0)
    ways = {BARE_POPEN: {"start_new_session": True},
            "Popen of /bin/true returns: own session + a preexec_fn (fork: turns before setpriv)":
                {"start_new_session": True, "preexec_fn": os.getppid}}
    out = {}
    spec = TurnSpec(argv=["/bin/true"], env={"PATH": os.environ.get("PATH", os.defpath)},
                    cwd="/")
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        run_capped(spec, on_start=lambda pid: lat.append(time.perf_counter() - t))
    out[RUNNER_POPEN] = summary(lat)
    for name, kw in ways.items():
        procs = []
        lat = timed_runs(n, lambda: procs.append(subprocess.Popen(["/bin/true"], **pipes, **kw)))
        for p in procs:
            p.communicate()
        out[name] = summary(lat)
    setpriv = shutil.which("setpriv")
    out["subprocess.run of /bin/true, start to exit"] = summary(timed_runs(
        n, lambda: subprocess.run(["/bin/true"], check=True, timeout=10)))
    if setpriv:
        out["subprocess.run of setpriv --pdeathsig KILL -- /bin/true, start to exit"] = summary(
            timed_runs(n, lambda: subprocess.run([setpriv, "--pdeathsig", "KILL", "--",
                                                  "/bin/true"], check=True, timeout=10)))
    return out


def python_baselines(n: int = 30) -> tuple[dict, str]:
    """A bare ``python -c pass`` with and without site; the stub on a one-message batch, as a
    supervisor runs it (``TurnRunner.build``'s argv, env and stdin). Also returns that argv."""
    from chatbox.runtime.config import AgentConfig
    from chatbox.runtime.workspace import Workspace
    from chatbox.guardrails.limits import Limits
    from chatbox.supervisor.capped import run_capped
    from chatbox.supervisor.turn import TurnRunner

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
        runs = [run_capped(spec) for _ in range(n)]
        build = timed_runs(n, lambda: runner.build(1, [msg]))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"python -c pass (this venv: site, .pth files, the editable-install finder)":
                summary(bare),
            "python -I -S -c pass": summary(no_site),
            STUB_AS_RUN: summary(plain),
            STUB_THROUGH_RUNNER: summary([r.ended_at - r.started_at for r in runs]),
            "TurnRunner.build (prompt, argv, env)": summary(build)}, " ".join(spec.argv)


def measure_baselines() -> dict:
    print("baselines ...", file=sys.stderr)
    others = Others()
    spawn = spawn_baselines()
    py, stub_argv = python_baselines()
    sqlite = sqlite_commit_baseline(seconds=1.0)
    rtt = zmq_round_trip_baseline(n=3000)
    rss = python_rss_baselines(sys.executable, "supervisor.main")
    return {"spawn": spawn, "python": py, "sqlite_commit_ms": sqlite["commit_ms"],
            "zmq_rtt_ms": rtt, "rss": rss, "bench_rss_mb": memory(os.getpid())["rss"],
            "stub_argv": stub_argv, "others_cores": others.cores()}
