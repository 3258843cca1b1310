"""What processes cost, read from /proc: CPU, wake-ups, memory; an idle fleet's window.

Used by ``bench/dispatch.py``: its ``idle`` and ``memory`` measurements (``idle_fleet``), the
fan-out's CPU, and ``Others`` — what the rest of the machine used meanwhile, since a neighbour's
benchmark on a small machine skews every figure. Linux only.

CPU is read two ways over the same window: ``utime + stime`` of ``/proc/PID/stat`` (clock ticks,
usually 10 ms: coarse, but what ``ps`` and ``top`` show) and the sum over every thread of the
first field of ``/proc/PID/task/TID/schedstat`` (nanoseconds on a CPU: what the headline uses).
Both count every thread of the process: libzmq's I/O thread, where ZMTP heartbeats are sent and
answered, included. Wake-ups are the threads' context switches (voluntary + involuntary): each is
one return from a blocking call, so an idle fleet that is truly blocked in ``poll()`` shows few.

Memory: ``VmRSS`` of ``/proc/PID/status``; PSS (a shared page split among the processes that map
it) and USS (pages private to the process: what stopping it gives back) from
``/proc/PID/smaps_rollup`` when it is readable.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from bench.common import system_cpu, table, wait_for_quiet

TICK = os.sysconf("SC_CLK_TCK")


def _threads(pid: int) -> list[Path]:
    try:
        return list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []


def cpu_sample(pid: int, children: bool = False) -> dict[str, float]:
    """CPU seconds (ticks and nanosecond precision), context switches and threads of ``pid``.

    ``children``: add the CPU of its reaped children (``cutime + cstime``), e.g. finished turns
    (tick precision only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    ns, switches, threads = 0, 0, 0
    for task in _threads(pid):
        try:
            ns += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
            threads += 1
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # the thread ended between the listing and the read
    return {"tick_s": ticks / TICK, "ns_s": ns / 1e9, "switches": switches, "threads": threads}


def memory(pid: int) -> dict[str, float]:
    """RSS, and PSS and USS when readable, in MiB."""
    out = {"rss": float("nan"), "pss": float("nan"), "uss": float("nan")}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss"] = int(line.split()[1]) / 1024
    try:
        rollup = {k.rstrip(":"): int(v) for k, v, *_ in
                  (line.split() for line in Path(f"/proc/{pid}/smaps_rollup").read_text()
                   .splitlines()[1:]) if v.isdigit()}
        out["pss"] = rollup["Pss"] / 1024
        out["uss"] = (rollup["Private_Clean"] + rollup["Private_Dirty"]) / 1024
    except (OSError, KeyError, ValueError):
        pass
    return out


def idle_window(pids: dict[str, int], seconds: float) -> dict:
    """Sample every process in ``pids`` (name -> pid), wait ``seconds``, sample again.

    Returns per-process deltas and the totals, with the share of all CPUs the whole machine used
    in the window (what else ran while we measured)."""
    before = {name: cpu_sample(pid) for name, pid in pids.items()}
    sys0, t0 = system_cpu(), time.monotonic()
    time.sleep(seconds)  # the measurement window itself: nothing to wait for
    wall = time.monotonic() - t0
    sys1 = system_cpu()
    after = {name: cpu_sample(pid) for name, pid in pids.items()}
    per = {name: {k: after[name][k] - before[name][k] for k in ("tick_s", "ns_s", "switches")}
           | {"threads": after[name]["threads"]} for name in pids}
    total = {k: sum(p[k] for p in per.values()) for k in ("tick_s", "ns_s", "switches")}
    return {"seconds": wall, "per": per, "total": total,
            "machine_busy": (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1])}


def idle_fleet(fleet, seconds: float, quiet_wait: float) -> dict:
    """The CPU (over ``seconds``) and memory of a started ``tests.fleet.Fleet``'s broker and
    supervisors, once the machine is quiet; the bench's own connections are closed first (the
    broker would answer their heartbeats)."""
    fleet.client().close()
    quiet = wait_for_quiet(quiet_wait)
    time.sleep(2.0)  # let the last log lines and the turns' exits settle
    procs = {"broker": fleet.broker} | dict(fleet.supervisors)
    pids = {name: p.pid for name, p in procs.items()}
    window = idle_window(pids, seconds) if seconds > 0 else None
    return {"quiet_before": quiet, "window": window,
            "memory": {name: memory(pid) for name, pid in pids.items()},
            "alive": all(p.popen.poll() is None for p in procs.values())}


def python_rss_baselines(python: str, imports: str) -> dict[str, dict[str, float]]:
    """Memory of a bare ``python -c pass``-like interpreter, and of one that imported
    ``imports`` (what a supervisor loads), each read by the interpreter itself at its end."""
    code = ("import json; from pathlib import Path; {imp}\n"
            "def kb(f, key):\n"
            "    for line in Path(f).read_text().splitlines():\n"
            "        if line.startswith(key): return int(line.split()[1])\n"
            "print(json.dumps({{'rss': kb('/proc/self/status', 'VmRSS:') / 1024,"
            " 'pss': kb('/proc/self/smaps_rollup', 'Pss:') / 1024}}))")
    out = {}
    for label, imp in (("python -c pass", ""), (f"python + import {imports}", f"import {imports}")):
        res = subprocess.run([python, "-c", code.format(imp=imp)], capture_output=True,
                             text=True, timeout=30, env={"PATH": os.environ.get("PATH", "")},
                             cwd=str(Path(__file__).resolve().parent.parent))
        try:
            out[label] = json.loads(res.stdout)
        except ValueError:
            out[label] = {"rss": float("nan"), "pss": float("nan")}
    return out


class Others:
    """How much CPU processes other than ours used during a phase (a neighbour's benchmark on a
    2-core machine skews every figure): all CPUs' busy time minus that of the bench, its reaped
    children, and the given live processes with their reaped children (finished turns)."""

    def __init__(self, pids: list[int] = ()):
        self.pids = list(pids)
        self.start = (time.monotonic(), system_cpu()[0], self._ours())

    def _ours(self) -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system + sum(
            cpu_sample(pid, children=True)["tick_s"] for pid in self.pids)

    def cores(self) -> float:
        """Mean number of CPUs the others kept busy since the start."""
        t0, busy0, ours0 = self.start
        wall = time.monotonic() - t0
        return max(0.0, (system_cpu()[0] - busy0) / TICK - (self._ours() - ours0)) / max(wall, 1e-9)


# ---------------------------------------------------------------------------- report

def idle_section(idle: dict) -> tuple[list[str], float]:
    w = idle["window"]
    per_min = w["total"]["ns_s"] * 60 / w["seconds"]
    sup = [v for k, v in w["per"].items() if k != "broker"]
    b = w["per"]["broker"]
    return ["", f"### Idle: broker + {idle['agents']} supervisors for {w['seconds']:.0f} s, each "
            "after one turn", "",
            table(["process", "CPU s (schedstat)", "CPU s (stat ticks)", "wake-ups/s",
                   "threads"],
                  [["broker", b["ns_s"], b["tick_s"], b["switches"] / w["seconds"], b["threads"]],
                   [f"supervisors, mean of {len(sup)}", sum(v["ns_s"] for v in sup) / len(sup),
                    sum(v["tick_s"] for v in sup) / len(sup),
                    sum(v["switches"] for v in sup) / len(sup) / w["seconds"], sup[0]["threads"]],
                   ["whole fleet", w["total"]["ns_s"], w["total"]["tick_s"],
                    w["total"]["switches"] / w["seconds"], "-"],
                   ["**whole fleet, per minute**", per_min,
                    w["total"]["tick_s"] * 60 / w["seconds"], "-", "-"]]),
            "", noise(max(0.0, w["machine_busy"] * (os.cpu_count() or 1)
                          - w["total"]["ns_s"] / w["seconds"]))], per_min


def noise(cores: float) -> str:
    """A sentence on what other processes used during a phase; a warning past 0.15 CPUs."""
    warn = " **— a neighbour was busy: run again on a quiet machine**" if cores > 0.15 else ""
    return f"Other processes kept {cores:.2f} CPUs busy on average meanwhile{warn}."


def memory_table(fleets: list[tuple[str, dict[str, dict]]]) -> str:
    """Per supervisor (mean, min, max), the broker's and the fleet's total, for each fleet
    (label, {"broker" | agent: memory(pid)})."""
    rows = []
    for label, m in fleets:
        sup = [v for k, v in m.items() if k != "broker"]
        for key in ("rss", "pss", "uss"):
            vals = sorted(v[key] for v in sup)
            rows.append([label, key.upper(), sum(vals) / len(vals), vals[0], vals[-1],
                         m["broker"][key], sum(vals) + m["broker"][key]])
    return table(["fleet", "measure", "per supervisor (mean)", "min", "max", "broker",
                  "fleet total"], rows)
