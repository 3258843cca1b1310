"""The CLI's contract without a broker: exit codes, one-line errors, config appends."""

from __future__ import annotations

import tomllib

import pytest

from chatbox.cli.main import _split_delegated, main
from chatbox.runtime.exits import Exit
from chatbox.cli.agents import append_agent_section


def test_a_usage_error_exits_2_with_one_line(capsys):
    """DESIGN §6: exit 2 is a bad command line; every error is one line on stderr."""
    assert main(["read"]) == Exit.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("chatbox: read: ")


def test_help_exits_0(capsys):
    """`--help` is not an error."""
    assert main(["--help"]) == 0
    assert "exit codes" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "expected"), [
    (["broker", "--log-level", "debug"], ("broker", ["--log-level", "debug"], None)),
    (["--workspace", "/w", "mcp", "--agent", "a"], ("mcp", ["--agent", "a"], "/w")),
    (["--workspace=/w", "demo"], ("demo", [], "/w")),
    (["post", "#general", "broker"], None),
    (["--workspace"], None),
])
def test_broker_mcp_and_demo_get_their_arguments_untouched(argv, expected):
    """The brief: `chatbox broker [...]` delegates with the same arguments."""
    assert _split_delegated(argv) == expected


def test_an_agent_section_is_appended_once_and_never_rewrites_the_file(tmp_path):
    """DESIGN §8: agent add appends [agents.NAME] when none exists."""
    path = tmp_path / "chatbox.toml"
    path.write_text("# mine\n[limits]\nmax_hops = 4", encoding="utf-8")
    assert append_agent_section(path, "kimi", "kimi") is True
    assert append_agent_section(path, "kimi", "claude") is False
    assert append_agent_section(path, "bot.v2", "stub") is True
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# mine\n[limits]\nmax_hops = 4\n")
    data = tomllib.loads(text)
    assert data["agents"] == {"kimi": {"engine": "kimi"}, "bot.v2": {"engine": "stub"}}
    assert data["limits"] == {"max_hops": 4}


def test_a_missing_config_file_is_created_with_the_section(tmp_path):
    """Appending to nothing creates the file."""
    path = tmp_path / "chatbox.toml"
    assert append_agent_section(path, "echo", "stub") is True
    assert path.read_text(encoding="utf-8") == '[agents.echo]\nengine = "stub"\n'
