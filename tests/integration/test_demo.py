"""The README's main command: `chatbox demo` runs a real multi-process conversation and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.fleet import ROOT


def test_the_demo_shows_a_conversation_and_exits_cleanly():
    """Issue 3: broker + two stub supervisors as processes, wake, turn, reply, clean shutdown."""
    done = subprocess.run([sys.executable, "-m", "chatbox", "demo"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin",
                                                      "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "→ WAKING" in out and "→ BUSY" in out and "→ ASLEEP" in out
    assert "echo     ↳" in out and "scribe   ↳" in out
    # the burst posted while echo was busy, by the seqs the demo printed for it ...
    burst = re.findall(r"\] you +#(\d+) #general: update [2-4] of 4$", out, re.M)
    assert len(burst) == 3, out
    # ... is drained by one follow-up turn that acknowledges exactly those three
    assert re.search(rf"\] echo +↳ #\d+ \(re #{burst[-1]}\) #general: ack {' '.join(burst)}$",
                     out, re.M), out
    assert out.count("stopped (exit 0)") == 4  # broker, two supervisors, the console


def test_the_demo_starts_the_console_and_prints_its_url_and_a_login_token():
    """The console is served during the demo: its URL answers the printed token as the human."""
    done = subprocess.run([sys.executable, "-m", "chatbox", "demo", "--port", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    url = re.search(r"\] console +(http://127\.0\.0\.1:\d+/) +\(you are you, admin;", done.stdout)
    assert url, done.stdout
    assert re.search(r"\] console +token cbx_[\w-]{40,}$", done.stdout, re.M), done.stdout
