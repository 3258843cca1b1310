"""Each real agent CLI driven by ChatBox itself, end to end: a human mentions the agent, the
supervisor runs one turn of the real CLI (installed by deploy/engines/install.sh) against the
scripted model endpoint on 127.0.0.1, the model calls the chatbox reply tool through the relay and
the supervisor's MCP server, and the reply lands in the thread with the turn's id, the trigger's
chain and hop + 1; the turn is recorded ok, connected, with the usage the CLI reported.

Without credentials each CLI's own words become the turn's recorded cause, the batch stays due,
and after ``max_consecutive_failures`` the escalation quotes that cause.
"""

from __future__ import annotations

import os

import pytest

from chatbox.harness import Timeout
from tests.engines.conftest import need
from tests.engines.model_server import ModelServer
from tests.fleet import child_env, wait_for

ENGINES = ["claude", "codex", "gemini", "kimi"]
TURN_SECONDS = 180  # one real CLI turn, with margin for a loaded machine
# what each CLI says when it has no credentials (its own words, as the turn records them)
NO_CREDENTIALS = {
    "claude": "Not logged in",
    "codex": "Missing environment variable",
    "gemini": "Invalid auth method selected",
    "kimi": "has no credential configured",
}


def agent_config(engine: str, srv: ModelServer, *, api: bool) -> str:
    return (f'[agents.bot]\nengine = "{engine}"\nauth = "{"api" if api else "subscription"}"\n'
            f'model = "scripted-model"\nbase_url = "{srv.url}"\n'
            f'[agents.bot.limits]\nmax_turn_seconds = {TURN_SECONDS}\nmax_consecutive_failures = 2\n')


def start(fleet, prefix, engine: str, srv: ModelServer, *, api: bool):
    fleet.write_config(agent_config(engine, srv, api=api))
    fleet.add_agent("bot", "#general", wake="mentions")
    if api:
        key = fleet.ws.ensure_agent_dir("bot") / "api_key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b"sk-scripted-test-key\n")
        os.close(fd)
    home = fleet.root / "operator-home"
    home.mkdir(exist_ok=True)
    env = child_env(fleet.ws, PATH=f"{prefix / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                    HOME=str(home))
    return fleet.start_supervisor("bot", env=env)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_real_cli_turn_replies_in_the_thread(fleet, engines_prefix, engine):
    need(engines_prefix, engine)
    root = fleet.post("#general", "the thread to answer in")
    with ModelServer(post_id=root.seq, body=f"answered by {engine}") as srv:
        sup = start(fleet, engines_prefix, engine, srv, api=True)
        admin_token = fleet.ws.admin_token_path.read_text().strip()
        trigger = fleet.post("#general", "@bot please answer; and do not read @.chatbox/token",
                             in_reply_to=root.seq)
        try:
            reply = wait_for(lambda: next((m for m in fleet.read("#general") if m.author == "bot"),
                                          None), timeout=TURN_SECONDS, what=f"{engine}'s reply")
        except Timeout as exc:
            raise AssertionError(f"{exc}\nsupervisor log:\n{sup.log_text()[-4000:]}\n"
                                 f"model requests: {[r['answer'] for r in srv.requests]}") from None
        turn = wait_for(lambda: (t := fleet.agent("bot").last_turn) and t.outcome and t,
                        timeout=30, what="the turn recorded")
        requests = repr(srv.requests)
    assert reply.body == f"answered by {engine}" and reply.in_reply_to == root.seq
    assert (reply.turn, reply.chain, reply.hop) == (turn.id, trigger.chain, trigger.hop + 1)
    assert (turn.outcome, turn.connected, turn.cause) == ("ok", True, None)
    assert turn.input_tokens > 0 and turn.output_tokens > 0  # the usage the CLI reported
    assert turn.batch == [trigger.seq]
    # least privilege: the model is offered the chatbox tools, none of the CLI's built-ins
    offered = [t for t in srv.tool_names() if t != "DeferredToolPlaceholder"]
    assert offered and all("chatbox" in t for t in offered if t not in CODEX_EXTRAS), offered
    # untrusted text is never syntax: no @file was pasted, no secret left the machine's disk
    assert admin_token not in requests
    assert fleet.agent("bot").state == "ASLEEP"


# codex offers these with every MCP server; nothing in its config removes them (docs/ENGINES.md)
CODEX_EXTRAS = {"list_mcp_resources", "list_mcp_resource_templates", "read_mcp_resource",
                "request_user_input"}


@pytest.mark.parametrize("engine", ENGINES)
def test_without_credentials_the_cause_is_recorded_and_escalated(fleet, engines_prefix, engine):
    need(engines_prefix, engine)
    with ModelServer(post_id=1) as srv:
        start(fleet, engines_prefix, engine, srv, api=False)
        trigger = fleet.post("#general", "@bot are you there?")
        turn = wait_for(lambda: (t := fleet.agent("bot").last_turn) and t.outcome and t,
                        timeout=TURN_SECONDS, what=f"{engine}'s failed turn")
        # a failed process, or (claude, codex) the CLI's own error result: a give-up at once
        assert turn.outcome in ("failed", "gave_up"), turn
        assert NO_CREDENTIALS[engine] in (turn.cause or ""), turn.cause
        # nothing was acked: the message comes again, until the circuit opens (or at once, for
        # the give-up); the escalation quotes the cause where a person looks
        alert = wait_for(lambda: next((m for m in fleet.read("#alerts")
                                       if NO_CREDENTIALS[engine] in m.body), None),
                         timeout=2 * TURN_SECONDS, what="an escalation quoting the cause")
        assert "bot" in alert.body
        bot = fleet.agent("bot")
        assert bot.paused and bot.offsets.get("#general", 0) < trigger.seq
        assert not srv.tool_calls()
