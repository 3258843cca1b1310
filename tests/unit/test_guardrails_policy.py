"""The policy and the middleware contract (DESIGN §5, STYLE "Guardrails are middleware")."""

import ast
import pickle
from pathlib import Path

import pytest

from chatbox import guardrails
from chatbox.guardrails.spend import SpendBudget
from chatbox.guardrails import (
    AgentHistory, FailureCircuit, GiveUpDetector, Guardrail, HopBudget, InvalidLimits, Limits,
    LivelockDetector, MessageFacts, Policy, TurnBudget, TurnFacts, Veto,
)

NOW = 1_700_000_000.0
MESSAGE = MessageFacts(seq=1, channel="#dev", author="ann", author_role="human", chain=1, hop=0, tier=0)


def turn(outcome: str = "ok", output: str = "done", **kw) -> TurnFacts:
    return TurnFacts(turn_id=1, agent="bob", outcome=outcome, exit_code=kw.pop("exit_code", 0),
                     output=output, started_at=NOW - 5, ended_at=NOW, **kw)


class Recorder(Guardrail):
    name = "recorder"

    def __init__(self, limits, calls, label, refuse=False):
        super().__init__(limits)
        self.calls, self.label, self.refuse = calls, label, refuse

    def after_turn(self, turn, history):
        self.calls.append(self.label)
        if self.refuse:
            raise self.veto(f"{self.label} refuses.", [self.label])


def test_base_guardrail_hooks_are_no_ops():
    """STYLE: guardrails are middleware with documented no-op hooks."""
    base = Guardrail(Limits())
    assert base.on_message(MESSAGE) is None
    assert base.before_turn("bob", AgentHistory(agent="bob"), NOW) is None
    assert base.after_turn(turn(), AgentHistory(agent="bob")) is None
    for hook in ("on_message", "before_turn", "after_turn"):
        assert getattr(Guardrail, hook).__doc__


def test_default_policy_runs_every_guardrail_in_order():
    """DESIGN §5: hop budget, turn and spend budgets, failures, give-up and livelock all apply."""
    policy = Policy(Limits())
    assert [type(g) for g in policy.guardrails] == [HopBudget, TurnBudget, SpendBudget,
                                                     FailureCircuit, GiveUpDetector, LivelockDetector]
    assert policy.hops is policy.guardrails[0]


def test_ordinary_traffic_passes_the_whole_policy():
    """DESIGN §5: the guardrails bound autonomy without getting in the way of ordinary work."""
    policy = Policy(Limits())
    history = AgentHistory(agent="bob", recent_outputs=["Read the spec.", "Wrote the tests."], turn_starts=[NOW - 600])
    policy.on_message(MESSAGE)
    policy.before_turn("bob", history, NOW)
    policy.after_turn(turn(output="Implemented the parser."), history)


def test_first_veto_propagates_and_later_guardrails_are_not_asked():
    """STYLE: middleware runs in order; the first Veto stops the rest."""
    calls: list[str] = []
    limits = Limits()
    policy = Policy(limits, [Recorder(limits, calls, "a"), Recorder(limits, calls, "b", refuse=True),
                             Recorder(limits, calls, "c", refuse=True)])
    with pytest.raises(Veto) as caught:
        policy.after_turn(turn(), AgentHistory(agent="bob"))
    assert calls == ["a", "b"]
    assert caught.value.evidence == ["b"]


def test_failure_circuit_speaks_before_give_up_on_the_same_turn():
    """DESIGN §5: a crashed turn that also says it gives up is reported as the failure it is."""
    history = AgentHistory(agent="bob", consecutive_failures=2, recent_exit_codes=[1, 1])
    with pytest.raises(Veto) as caught:
        Policy(Limits()).after_turn(turn("failed", "I give up.", exit_code=1), history)
    assert caught.value.guardrail == "failure_circuit"


def test_policy_exposes_hop_arithmetic_and_failure_outcomes():
    """DESIGN §5: human posts are hop 0, replies hop + 1, and hops reaching max_hops wake nobody."""
    policy = Policy(Limits(max_hops=3))
    assert policy.start_hop() == 0
    assert policy.next_hop([0, 2]) == 3
    policy.on_message(MessageFacts(seq=1, channel="#general", author="kim", author_role="agent",
                                   chain=1, hop=2, tier=0))
    with pytest.raises(Veto):
        policy.on_message(MessageFacts(seq=2, channel="#general", author="kim",
                                       author_role="agent", chain=1, hop=3, tier=0))
    assert policy.is_failure("lost") and not policy.is_failure("vetoed")


def test_policy_refuses_impossible_limits():
    """DESIGN §5: a repeat_threshold of 1 would call every turn a livelock."""
    with pytest.raises(InvalidLimits, match="repeat_threshold"):
        Policy(Limits(repeat_threshold=1))


def test_veto_reads_as_its_reason_and_survives_pickling():
    """DESIGN §5: an escalation names the reason and the evidence."""
    veto = Veto("livelock", "Agent bob repeated itself.", ["idle", "idle", "idle"])
    assert str(veto) == "Agent bob repeated itself."
    copy = pickle.loads(pickle.dumps(veto))
    assert (copy.guardrail, copy.reason, copy.evidence) == ("livelock", veto.reason, ["idle", "idle", "idle"])
    assert isinstance(copy, guardrails.GuardrailError)


def test_facts_are_frozen():
    """STYLE: facts handed to guardrails are values, not shared state."""
    with pytest.raises(AttributeError):
        MESSAGE.hop = 5


ALLOWED_IMPORTS = {"__future__", "re", "difflib", "itertools", "collections", "typing", "msgspec"}


def test_guardrails_are_pure_policy_without_io():
    """Brief and DESIGN §5: guardrails import no I/O, no clock and none of bus, broker, supervisor, chatbox."""
    package = Path(guardrails.__file__).parent
    for module in sorted(package.glob("*.py")):
        tree = ast.parse(module.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                own = name == "chatbox.guardrails" or name.startswith("chatbox.guardrails.")
                assert own or name.split(".")[0] in ALLOWED_IMPORTS, f"{module.name} imports {name}"
        assert len(module.read_text(encoding="utf-8").splitlines()) < 150, module.name
