"""The README's main command: `chatbox demo` runs a real multi-process conversation and exits 0."""

from __future__ import annotations

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
    assert "ack 6 7 8" in out  # the burst during a busy turn, drained by one follow-up turn
    assert out.count("stopped (exit 0)") == 3
