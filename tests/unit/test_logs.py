"""The log lines of every process (``runtime/logs.py``): one JSON object a line on stderr, in
the standard library's format (`"event": "ready"`, which tools grep for), no secret in them,
nothing in them a terminal would act on (every non-ASCII character escaped)."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import logging, pathlib, structlog
from chatbox.runtime import logs
logs.configure("info", component="test")
log = structlog.get_logger("test")
log.info("plain", n=3, ratio=0.5, ok=True, nothing=None, names=["a", "b"])
log.info("secret", api_token="tok-123", token_path="/ws/.chatbox/token", Password="pw")
log.info("text", body="right-to-left \u202e here, a C1 CSI \u009b2J, caf\u00e9, \u2603")
log.info("object", path=pathlib.Path("/srv/ws"), pair=(1, 2))
logging.getLogger("library").warning("from the standard %s", "logging")
"""


def _lines() -> list[str]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, check=True)
    return proc.stderr.splitlines()


def test_every_line_is_one_json_object_in_ascii_with_its_values():
    lines = _lines()
    assert len(lines) == 5, lines
    assert all(line.isascii() for line in lines), lines
    plain, secret, text, obj, library = (json.loads(line) for line in lines)
    assert {k: plain[k] for k in ("event", "n", "ratio", "ok", "nothing", "names", "component",
                                  "level")} == {
        "event": "plain", "n": 3, "ratio": 0.5, "ok": True, "nothing": None,
        "names": ["a", "b"], "component": "test", "level": "info"}
    assert plain["timestamp"].endswith("Z")
    assert '"event": "plain"' in lines[0]
    # escaped in the file, the same text once parsed
    assert text["body"] == "right-to-left \u202e here, a C1 CSI \u009b2J, caf\u00e9, \u2603"
    assert obj["path"] == "PosixPath('/srv/ws')" and obj["pair"] == [1, 2]
    assert library["event"] == "from the standard logging" and library["level"] == "warning"


def test_a_field_named_for_a_secret_is_redacted():
    secret = json.loads(_lines()[1])
    assert secret["api_token"] == "[redacted]" and secret["Password"] == "[redacted]"
    assert secret["token_path"] == "/ws/.chatbox/token"  # a path, not a secret
