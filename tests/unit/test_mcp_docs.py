"""docs/MCP.md and README.md: every registration snippet is a command line `chatbox mcp` accepts."""

from __future__ import annotations

import json
import re
import shlex

import pytest

from chatbox.mcp import server as mcp_server
from tests.fleet import ROOT

DOC = (ROOT / "docs" / "MCP.md").read_text(encoding="utf-8")
README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```[a-z]*\n(.*?)```", DOC + README, re.S)


def _shell_commands() -> list[list[str]]:
    found = []
    for block in BLOCKS:
        for line in block.splitlines():
            if "[--" in line:  # a usage synopsis, not a command line
                continue
            for m in re.finditer(r"(?<![\w/\"])chatbox mcp([^'\"\n`|\\#]*)", line):
                found.append(["mcp", *shlex.split(m.group(1))])
    return found


def _args_arrays() -> list[list[str]]:
    found = []
    for block in BLOCKS:
        for m in re.finditer(r"args\"?\s*[:=]\s*(\[[^\]]*\])", block):
            found.append(json.loads(m.group(1)))
    return found


SNIPPETS = _shell_commands() + _args_arrays()


def test_the_doc_has_snippets_for_every_host():
    """Issue 5: snippets for Claude Code, Kimi CLI, Codex and a generic mcp.json."""
    for host in ("Claude Code", "Kimi", "Codex", "mcp.json"):
        assert host in DOC
    assert len(SNIPPETS) >= 5


@pytest.mark.parametrize("argv", SNIPPETS, ids=[" ".join(a) for a in SNIPPETS])
def test_each_snippet_is_accepted_by_the_server_parser(argv):
    """Issue 5: the documented command lines are exactly ones the project accepts."""
    assert argv[0] == "mcp", argv
    args = mcp_server.parser().parse_args(argv[1:])
    assert args.agent == "NAME"
