"""Input checked everywhere alike (issue 13): ids bounded to what SQLite stores, one-line texts
without control characters, argv that is not UTF-8 — each a clear refusal naming what was
wrong, from the CLI and over the bus, never "internal error" or a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused
from tests.fleet import child_env

BIG = 2**63  # one past what SQLite stores


def cli(fleet, *args: str | bytes) -> subprocess.CompletedProcess:
    argv = [os.fsencode(sys.executable), b"-m", b"chatbox",
            *(a if isinstance(a, bytes) else a.encode() for a in args)]
    return subprocess.run(argv, cwd=fleet.root, env=child_env(fleet.ws), capture_output=True,
                          timeout=60)


def one_line(done: subprocess.CompletedProcess) -> str:
    text = done.stderr.decode("utf-8", "replace")
    assert text.count("\n") == 1 and "Traceback" not in text, text
    return text


def test_ids_past_what_sqlite_stores_are_usage_errors_in_the_cli(fleet):
    for args in (("read", "#general", "--since", str(BIG)),
                 ("post", "#general", "hi", "--reply-to", str(BIG * 4)),
                 ("approve", str(BIG))):
        done = cli(fleet, *args)
        assert done.returncode == 2, args
        assert "a message number is 0 to 9223372036854775807" in one_line(done)


def test_argv_that_is_not_utf8_is_named(fleet):
    done = cli(fleet, "post", "#general", b"caf\xe9")
    assert done.returncode == 2 and "argument 3 is not valid UTF-8: b'caf\\xe9'" in one_line(done)


def test_control_characters_in_one_line_fields_are_refused_naming_the_field(fleet):
    done = cli(fleet, "channel", "create", "#ops", "--topic", "fine\x1b[31mred")
    assert done.returncode == 1 and "(field: topic)" in one_line(done)
    done = cli(fleet, "post", "#general", "body", "--title", "two\nlines")
    assert done.returncode == 1 and "(field: title)" in one_line(done)


@pytest.mark.parametrize("req,field", [
    (wire.Read(channel="#general", since=BIG - 1), None),  # the largest id is fine
    (wire.Read(channel="#general", since=BIG), "since"),
    (wire.GetPost(seq=BIG), "seq"),
    (wire.Post(channel="#general", body="x", in_reply_to=BIG), "in_reply_to"),
    (wire.Hello(agent="kim", supervisor="sup\x00evil"), "supervisor"),
    (wire.Hello(agent="kim", supervisor="s" * 10_000), "supervisor"),
    (wire.SetFlag(seq=1, action="close", resolution="done\x00"), "resolution"),
])
def test_the_broker_refuses_out_of_bound_requests_naming_the_field(fleet, req, field):
    fleet.add_agent("kim", "#general")
    client = fleet.agent_client("kim")
    if field is None:
        assert client.call(req).messages == []
        return
    with pytest.raises(Refused) as refused:
        client.call(req)
    assert refused.value.code in ("invalid", "too_large") and refused.value.field == field
