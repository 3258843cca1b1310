"""MCP server start (issue 11 item 9): how soon the chatbox MCP server a turn's CLI starts
answers ``initialize`` and ``tools/list``, through the relay to a running hub and fresh.

The goal: within 300 ms of its start, on this machine. Every figure is of real processes on a
temporary workspace over ipc: a broker (``bench/common.py`` ``BenchBroker``), one agent with a
real turn open (Hello + Claim, as a supervisor does), and then N runs of each variant:

    relay   the agent's long-lived MCP server (``chatbox mcp --agent A --listen-fd FD``, started
            once before the runs through the supervisor's own ``McpHub``, waited for until it
            logged "ready"), and per run the command a turn's CLI is given,
            ``McpHub.relay_command(turn)``: ``python -I -S supervisor/mcp_relay.py SOCKET --turn N``
    fresh   per run a new ``chatbox mcp --agent A --workspace W`` (``supervisor.turn
            .server_command``) with the turn's environment, as without a hub

    .venv/bin/python bench/mcp_start.py [--runs 30] [--load N] [--quiet-wait 20] [--json FILE]

One run, as a CLI does it, in raw JSON-RPC lines over the child's stdin and stdout (no MCP SDK
in this process, so the client costs nothing): spawn the process (the clock starts before
Popen), write ``initialize`` at once (it waits in the pipe until the server reads it), read
until the answer with its id (**-> initialize answered**), write ``notifications/initialized``
and ``tools/list``, read until that answer (**-> tools/list answered**), close stdin, wait for
the exit (bounded). Runs of the variants alternate (relay, fresh, relay, ...), so a drift of
the machine touches both alike. No run is left out: the first one is shown on its own too.

``--load N`` then does it all again while N busy-loop processes (``python -c`` spinning on the
clock) keep N CPUs busy; they stop by themselves after a bounded time or when this process is
gone, and are killed at the end of the phase anyway. Baseline in the same run: ``python -I -S
-c pass``, spawn to exit. The exit status is 1 if a run failed (no answer, an error, no
``reply`` tool).
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (BenchBroker, latency_summary, machine, system_cpu, table,  # noqa: E402
                          wait_for_quiet)
from bench.idle import Others, memory, noise  # noqa: E402
from chatbox import harness  # noqa: E402
from chatbox.bus import wire  # noqa: E402
from chatbox.bus.client import BusClient  # noqa: E402
from chatbox.runtime import env as runtime_env  # noqa: E402
from chatbox.supervisor.mcp_hub import McpHub  # noqa: E402
from chatbox.supervisor.turn import server_command  # noqa: E402

GOAL_MS = 300.0
AGENT = "bench-agent"
PROTOCOL = "2025-06-18"  # what the CLIs of issue 11 send; the server answers with its own
SESSION_TIMEOUT = 60.0  # one run, spawn to tools/list answered, under any load
EXIT_TIMEOUT = 10.0

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                         "clientInfo": {"name": "bench-mcp-start", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}

# a busy loop that ends by itself: at its deadline, or once its parent (this bench) is gone
LOADER = ("import os, time\n"
          "end, parent = time.monotonic() + {seconds}, os.getppid()\n"
          "while time.monotonic() < end and os.getppid() == parent:\n"
          "    for _ in range(100000):\n"
          "        pass\n")

# ---------------------------------------------------------------------------- one run


class RunFailed(RuntimeError):
    pass


class Lines:
    """JSON-RPC messages read from a pipe, one per line, each read bounded by a deadline."""

    def __init__(self, fd: int, deadline: float):
        self.fd = fd
        self.deadline = deadline
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(fd, selectors.EVENT_READ)

    def until_id(self, want: int) -> dict:
        while True:
            line = self._line()
            try:
                msg = json.loads(line)
            except ValueError:
                raise RunFailed(f"not JSON on stdout: {line[:200]!r}") from None
            if isinstance(msg, dict) and msg.get("id") == want:
                if "error" in msg:
                    raise RunFailed(f"request {want} answered with an error: {msg['error']}")
                return msg["result"]
            # anything else (a notification, a request of the server) is not the answer

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            left = self.deadline - time.perf_counter()
            if left <= 0:
                raise RunFailed(f"no answer within {SESSION_TIMEOUT:g} s")
            if not self.sel.select(left):
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise RunFailed("stdout closed before the answer")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def close(self) -> None:
        self.sel.close()


def send(proc: subprocess.Popen, msg: dict) -> None:
    proc.stdin.write(json.dumps(msg).encode() + b"\n")
    proc.stdin.flush()


def one_run(argv: list[str], env: dict[str, str], cwd: str, errlog) -> dict[str, float]:
    """Seconds from before Popen to each answer; RunFailed if the session does not complete."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog,
                            env=env, cwd=cwd, start_new_session=True)
    lines = Lines(proc.stdout.fileno(), t0 + SESSION_TIMEOUT)
    try:
        send(proc, INITIALIZE)
        init = lines.until_id(1)
        t_init = time.perf_counter() - t0
        send(proc, INITIALIZED)
        send(proc, TOOLS_LIST)
        tools = lines.until_id(2)
        t_tools = time.perf_counter() - t0
        names = {t.get("name") for t in tools.get("tools", [])}
        if "reply" not in names:
            raise RunFailed(f"tools/list has no reply tool: {sorted(names)}")
        proc.stdin.close()
        try:
            code = proc.wait(EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise RunFailed(f"did not exit within {EXIT_TIMEOUT:g} s of its stdin closing") from None
        return {"initialize": t_init, "tools_list": t_tools, "exit": time.perf_counter() - t0,
                "exit_code": code, "tools": len(names),
                "protocol": init.get("protocolVersion"),
                "server": (init.get("serverInfo") or {}).get("name")}
    finally:
        lines.close()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(5)
        for f in (proc.stdin, proc.stdout):
            try:
                f.close()
            except (OSError, ValueError):
                pass


# ---------------------------------------------------------------------------- set-up


def open_turn(broker: BenchBroker) -> int:
    """An agent subscribed to the bench channel, a post to it, and its turn claimed (as a
    supervisor would): the turn the relay and the fresh server say they serve."""
    admin = broker.client()
    admin.call(wire.AddAgent(name=AGENT, subscribe=[broker.channel], wake="all"))
    admin.call(wire.Post(channel=broker.channel, body="a post for the bench's turn"))
    agent = BusClient(broker.endpoints, broker.ws.read_token(broker.ws.agent_token_path(AGENT)))
    try:
        hello = agent.call(wire.Hello(agent=AGENT, supervisor="bench-mcp-start"))
        claim = agent.call(wire.Claim(agent=AGENT, supervisor="bench-mcp-start",
                                      epoch=hello.epoch))
        return claim.turn
    finally:
        agent.close()


def start_hub(broker: BenchBroker, log_path: Path) -> tuple[McpHub, float]:
    """The agent's hub as its supervisor starts it (``McpHub.start``), its stderr (the log)
    into ``log_path``; returns once it logged "ready", with the seconds that took."""
    ws = broker.ws
    ws.ensure_agent_dir(AGENT)
    hub = McpHub(AGENT, ws.agent_mcp_socket(AGENT), server_command(AGENT, ws),
                 harness.child_env(ws.root, PYTHONPATH=str(ROOT)), str(ws.root))
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    saved = os.dup(2)
    sys.stderr.flush()
    t0 = time.perf_counter()
    os.dup2(fd, 2)  # McpHub lets the server inherit stderr: only the child keeps this one
    try:
        hub.start()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
    deadline = time.monotonic() + 60
    while not _logged_ready(log_path):
        if hub.proc.poll() is not None or time.monotonic() > deadline:
            hub.stop()
            raise RunFailed(f"the hub never logged ready:\n{log_path.read_text()[-2000:]}")
        time.sleep(0.005)
    return hub, time.perf_counter() - t0


def _logged_ready(path: Path) -> bool:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            if json.loads(line).get("event") == "ready":
                return True
        except (ValueError, AttributeError):
            continue
    return False


def start_load(n: int, seconds: float) -> list[subprocess.Popen]:
    code = LOADER.format(seconds=seconds)
    return [subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=subprocess.DEVNULL,
                             start_new_session=True) for _ in range(n)]


def stop_load(loaders: list[subprocess.Popen]) -> None:
    for p in loaders:
        if p.poll() is None:
            p.kill()
        p.wait(5)


# ---------------------------------------------------------------------------- a phase


def phase(broker: BenchBroker, hub: McpHub, turn: int, runs: int, errlog,
          ours: list[int]) -> dict:
    ws = broker.ws
    relay_argv = hub.relay_command(turn)
    relay_env = dict(hub.env)
    fresh_argv = server_command(AGENT, ws)
    fresh_env = harness.child_env(ws.root, PYTHONPATH=str(ROOT),
                                  **runtime_env.for_turn(turn, AGENT, str(ws.root)))
    bare = [sys.executable, "-I", "-S", "-c", "pass"]
    others = Others(ours)
    busy0, total0 = system_cpu()
    out: dict = {"relay": [], "fresh": [], "python": [], "failed": []}
    for i in range(runs):
        for name, argv, env in (("relay", relay_argv, relay_env), ("fresh", fresh_argv, fresh_env)):
            if name == "relay" and hub.proc.poll() is not None:
                out["failed"].append(f"relay run {i + 1}: the hub exited ({hub.proc.returncode})")
                continue
            try:
                out[name].append(one_run(argv, env, str(ws.root), errlog))
            except (RunFailed, OSError) as exc:
                out["failed"].append(f"{name} run {i + 1}: {exc}")
        if i < 10:
            t = time.perf_counter()
            subprocess.run(bare, stdin=subprocess.DEVNULL, check=False)
            out["python"].append(time.perf_counter() - t)
    out["others_cores"] = others.cores()
    busy1, total1 = system_cpu()
    out["machine_busy"] = (busy1 - busy0) / max(1, total1 - total0)
    for name in ("relay", "fresh"):
        rs = out[name]
        out[f"{name}_ms"] = {k: {**latency_summary([r[k] for r in rs]), "n": len(rs),
                                 "first": rs[0][k] * 1e3 if rs else float("nan")}
                             for k in ("initialize", "tools_list")}
    out["python_ms"] = {**latency_summary(out["python"]), "n": len(out["python"]),
                        "first": out["python"][0] * 1e3 if out["python"] else float("nan")}
    sample = (out["relay"] or out["fresh"] or [{}])[0]
    out["protocol"], out["tools"] = sample.get("protocol"), sample.get("tools")
    return out


# ---------------------------------------------------------------------------- report


def phase_section(title: str, ph: dict) -> list[str]:
    rows = []
    for name, label in (("relay", "relay to the running hub"),
                        ("fresh", "fresh `chatbox mcp`")):
        for key, what in (("initialize", "initialize answered"),
                          ("tools_list", "tools/list answered")):
            s = ph[f"{name}_ms"][key]
            rows.append([f"{label}: spawn -> {what}", s["n"], s["first"], s["p50"], s["p90"],
                         s["p99"], s["max"]])
    p = ph["python_ms"]
    rows.append(["baseline `python -I -S -c pass`: spawn -> exit", p["n"], p["first"], p["p50"],
                 p["p90"], p["p99"], p["max"]])
    ratios = []
    for key, what in (("initialize", "initialize"), ("tools_list", "tools/list")):
        r, f = ph["relay_ms"][key], ph["fresh_ms"][key]
        ratios.append([f"fresh ÷ relay, {what}", *(f[k] / r[k] if r[k] else float("nan")
                                                    for k in ("p50", "p90", "p99", "max"))])
    lines = ["", f"### {title} (ms; every run counted, the first also on its own)", "",
             table(["variant", "n", "1st", "p50", "p90", "p99", "max"], rows), "",
             table(["ratio", "p50", "p90", "p99", "max"], ratios), ""]
    for name, label in (("relay", "relay"), ("fresh", "fresh `chatbox mcp`")):
        s = ph[f"{name}_ms"]["tools_list"]
        if s["n"]:
            verdict = "met" if s["max"] <= GOAL_MS else (
                "met at p99, not at max" if s["p99"] <= GOAL_MS else "missed")
            lines.append(f"Goal {GOAL_MS:.0f} ms to tools/list answered, {label}: p99 "
                         f"{s['p99']:,.1f} ms, max {s['max']:,.1f} ms ({s['max'] / GOAL_MS:.2f} "
                         f"× the goal): **{verdict}**.  ")
    lines.append(f"Protocol answered: {ph['protocol']}; tools listed: {ph['tools']}.  ")
    if ph["failed"]:
        lines.append(f"**{len(ph['failed'])} runs failed:** " + "; ".join(ph["failed"][:5]))
    lines.append(f"All CPUs were {ph['machine_busy'] * 100:.0f} % busy during the phase "
                 "(the bench's own processes included). " + noise(ph["others_cores"]))
    return lines


def report(res: dict) -> str:
    m = res["machine"]
    out = ["## MCP server start (issue 11 item 9)", "",
           f"Machine: {m['cpus']} CPUs, {m['cpu']}, {m['memory']}; {m['kernel']}; {m['python']}.",
           f"Load before the run: {res['load'] * 100:.0f} % of the CPUs busy.", "",
           f"The hub (`chatbox mcp --listen-fd`, started once through `McpHub.start`): spawn -> "
           f"\"ready\" logged {res['hub_ready_s'] * 1e3:,.0f} ms; its memory after the runs "
           f"RSS {res['hub_memory']['rss']:.1f} MiB, USS {res['hub_memory']['uss']:.1f} MiB."]
    out += phase_section("Quiet machine", res["quiet"])
    if "loaded" in res:
        out += phase_section(f"Loaded: {res['load_n']} busy-loop processes on {m['cpus']} CPUs",
                             res["loaded"])
    return "\n".join(out)


# ---------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=30, help="runs of each variant per phase")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="also run every variant again while N busy-loop processes run")
    p.add_argument("--quiet-wait", type=float, default=20.0, metavar="S",
                   help="wait up to S seconds for other processes to go quiet before starting")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # McpHub logs through structlog: to stderr here, so stdout is the report alone
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    if args.runs < 1 or args.load < 0:
        print("mcp_start: --runs must be at least 1 and --load not negative", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    res: dict = {"machine": machine(), "load": wait_for_quiet(args.quiet_wait), "runs": args.runs}
    with BenchBroker() as broker:
        turn = open_turn(broker)
        errlog_path = broker.root / "servers.log"
        with open(errlog_path, "ab") as errlog:
            print(f"mcp_start: hub for {AGENT}, turn {turn} ...", file=sys.stderr)
            hub, res["hub_ready_s"] = start_hub(broker, broker.root / "hub.log")
            try:
                print(f"mcp_start: {args.runs} runs each, quiet ...", file=sys.stderr)
                res["quiet"] = phase(broker, hub, turn, args.runs, errlog,
                                     [broker.pid, hub.proc.pid])
                if args.load:
                    res["load_n"] = args.load
                    # bounded: far more than the phase needs even at 10 s per run
                    loaders = start_load(args.load, 60 + args.runs * 20)
                    try:
                        time.sleep(1.0)  # the loaders are spinning
                        print(f"mcp_start: {args.runs} runs each, {args.load} busy loops ...",
                              file=sys.stderr)
                        res["loaded"] = phase(broker, hub, turn, args.runs, errlog,
                                              [broker.pid, hub.proc.pid,
                                               *(p.pid for p in loaders)])
                    finally:
                        stop_load(loaders)
                res["hub_memory"] = memory(hub.proc.pid)
            finally:
                hub.stop()
    print(report(res))
    cmd = " ".join(["bench/mcp_start.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n(run took {time.monotonic() - t0:.0f} s; command: .venv/bin/python {cmd})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str), encoding="utf-8")
    failed = res["quiet"]["failed"] + res.get("loaded", {}).get("failed", [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
