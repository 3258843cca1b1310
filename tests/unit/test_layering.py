"""The layering of docs/ARCHITECTURE.md, enforced: every import of every module, nested ones too.

    clients  chatbox.cli  chatbox.mcp  chatbox.demo  chatbox.harness     (nothing imports them)
                 │  (the broker only through chatbox.broker.entry)
    processes    chatbox.broker            chatbox.supervisor            (never each other)
                 │                          │
    runtime      chatbox.runtime   (workspace, config, env, logs, exits, signals, start-up)
                 │
    leaves       chatbox.bus       chatbox.guardrails                    (import nothing of ours)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# import namespace -> folder, as pyproject.toml's package-dir maps them
FOLDERS = {
    "chatbox.bus": "bus", "chatbox.guardrails": "guardrails", "chatbox.runtime": "runtime",
    "chatbox.broker": "broker", "chatbox.supervisor": "supervisor", "chatbox": "chatbox",
}
LEAVES = {"chatbox.bus", "chatbox.guardrails"}
CLIENTS = {"chatbox.cli", "chatbox.mcp", "chatbox.demo", "chatbox.harness", "chatbox.__main__"}
# which layers each layer may import (its own always)
ALLOWED = {
    "chatbox.bus": set(),
    "chatbox.guardrails": set(),
    "chatbox.runtime": {"chatbox.bus", "chatbox.guardrails"},
    "chatbox.broker": {"chatbox.runtime", "chatbox.bus", "chatbox.guardrails"},
    "chatbox.supervisor": {"chatbox.runtime", "chatbox.bus", "chatbox.guardrails"},
    "clients": {"chatbox.runtime", "chatbox.bus", "chatbox.guardrails", "clients",
                "chatbox.broker.entry"},
}
MAX_LINES = 400


def modules() -> list[tuple[str, Path]]:
    found = []
    for namespace, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([namespace, *parts])
            if namespace == "chatbox" and parts and f"chatbox.{parts[0]}" in FOLDERS:
                continue
            found.append((name, path))
    return found


def layer(module: str) -> str | None:
    """The layer a module of ours belongs to; None for the bare namespace package."""
    if module == "chatbox":
        return None
    if module == "chatbox.broker.entry":
        return "chatbox.broker.entry"
    for namespace in FOLDERS:
        if namespace != "chatbox" and (module == namespace or module.startswith(namespace + ".")):
            return namespace
    return "clients"


def imports(path: Path, module: str) -> set[str]:
    """Every module of ours that ``path`` imports, at any depth of the code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            subs = [f"{base}.{alias.name}" for alias in node.names]
            # ``from chatbox.broker import entry`` imports the module entry, not the package's
            # other modules; a name that is no module is taken from ``base`` itself
            names = [n for n in subs if n in MODULES] or [base]
            if len(names) < len(subs):
                names.append(base)
        else:
            continue
        found.update(n for n in names if n == "chatbox" or n.startswith("chatbox."))
    return found


MODULES = {m for m, _ in modules()}


def is_module(name: str) -> bool:
    return name in MODULES


def test_the_walk_sees_every_package():
    names = {m for m, _ in modules()}
    for expected in ("chatbox.bus.wire", "chatbox.broker.dispatcher", "chatbox.supervisor.main",
                     "chatbox.runtime.config", "chatbox.cli.main", "chatbox.mcp.server",
                     "chatbox.guardrails.policy", "chatbox.broker.entry"):
        assert expected in names


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_imports_follow_the_allowed_arrows(module: str, path: Path):
    own = layer(module)
    if own is None:  # chatbox/__init__.py, the namespace: imports nothing of ours
        assert not imports(path, module), f"{module} must import nothing of ours"
        return
    own_key = "clients" if own == "clients" else ("chatbox.broker" if own == "chatbox.broker.entry" else own)
    for target in imports(path, module):
        if target == "chatbox":
            continue  # the namespace package itself (``from chatbox import guardrails``)
        if not is_module(target):
            continue  # a name imported from a module (``from chatbox.bus.wire import X``)
        dest = layer(target)
        if dest == own or (own_key == "chatbox.broker" and dest in ("chatbox.broker", "chatbox.broker.entry")):
            continue
        assert dest in ALLOWED[own_key], f"{module} imports {target}: {own_key} -> {dest} is not allowed"


def test_nothing_outside_the_clients_imports_them():
    for module, path in modules():
        if layer(module) == "clients":
            continue
        for target in imports(path, module):
            assert layer(target) != "clients" or target == "chatbox", f"{module} imports client {target}"


def test_only_the_broker_touches_sqlite():
    for module, path in modules():
        if layer(module) in ("chatbox.broker", "chatbox.broker.entry"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in ("apsw", "sqlite3"), f"{module} imports {name}"


def test_no_top_level_module_names_but_chatbox():
    """An install puts only ``chatbox`` into site-packages: no ``import broker`` anywhere."""
    bare = {"broker", "bus", "supervisor", "guardrails", "runtime"}
    for folder in ("bus", "guardrails", "runtime", "broker", "supervisor", "chatbox", "tests", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                for name in names:
                    assert name.split(".")[0] not in bare, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("module,path", modules(), ids=[m for m, _ in modules()])
def test_no_module_over_400_lines(module: str, path: Path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"
