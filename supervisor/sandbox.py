"""Every turn in an OS sandbox (bubblewrap), so a turn acts only as its agent (DESIGN §7).

Inside, the turn sees the system and nothing else of the host: every top-level directory
that is not the system (``SYSTEM``: ``/usr``, ``/etc``, ``/opt``, the ``/bin`` and ``/lib``
family, ``/sys``) is an empty tmpfs — ``/home``, ``/root``, ``/tmp``, ``/var``, ``/run``,
``/srv``, ``/mnt``, ``/media`` and any other, so another workspace on this host, the operator's
``~/.ssh`` or a file in ``/tmp`` are simply not there — and a top-level file is empty.
``/tmp`` and ``/var/tmp`` are the turn's own, empty and writable. Then exactly what the turn
needs is bound back, read-only unless said:

- what runs it (``runtime``): the engine's program, found through ``PATH`` and followed through
  its symlinks to its install tree (``PREFIX`` for ``PREFIX/bin/NAME``: a CLI of
  deploy/engines/install.sh, Node included), and its ``#!`` interpreter the same way; the Python
  that runs the stub, the relay and ``chatbox`` (``sys.prefix``, ``sys.base_prefix``), the code
  of ChatBox's packages, the ``PYTHONPATH`` entries of the turn's environment; the resolver
  file ``/etc/resolv.conf`` points to; and the paths the agent's config opens (``paths``);
- the workspace, writable (agents work on the project), with ``chatbox.toml`` read-only;
- of the data directory only what is its agent's own: its token (read-only), its directory
  (CLI home, MCP socket, API key), its CLI home wherever ``home`` puts it (writable) and the bus
  sockets. The admin token, other agents' tokens, the database and the audit key are not there.

A tree that would show the operator's home, a parent of the workspace or a whole top-level
directory is never bound: the narrower directory of the program, or the file alone, is.
``HOME`` is the agent's CLI home and ``TMPDIR`` a directory in it. The turn gets its own PID
namespace, whose PID 1 is ``sandbox_init.py``: it holds the read end of the supervisor's
lifeline (a pipe only the supervisor can write), so when the turn ends, or its supervisor dies
at any moment — while bubblewrap is still setting the sandbox up included — it exits, and every
process the turn started dies with it, a ``setsid`` grandchild included. The network is shared:
the engine needs its model. The turn keeps the operator's user, so what that user may read in
the system directories it may read too.

``sandbox = "none"`` in an agent's config turns this off, deliberately; the supervisor logs it at
start. Where bubblewrap cannot start, the supervisor refuses to run turns (``check``) — there is
no silent fallback.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from chatbox.bus.endpoints import Endpoints, ipc_path
from chatbox.runtime.workspace import Workspace
from chatbox.supervisor.errors import EngineError

INSTALL = "install bubblewrap (Debian: apt-get install bubblewrap; make test does it as root)"

# the top-level directories a turn sees as the host has them (read-only); every other one is
# an empty tmpfs, /dev and /proc are the sandbox's own
SYSTEM = frozenset({"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "opt", "sys"})
KERNEL = frozenset({"dev", "proc"})
SCRATCH = ("/tmp", "/var/tmp")  # empty, writable, sticky like the host's
# the packages whose code a turn runs (the stub and the relay by file, ``chatbox`` by import)
PACKAGES = ("chatbox", "chatbox.bus", "chatbox.runtime", "chatbox.guardrails",
            "chatbox.supervisor", "chatbox.broker")
# the sandbox's PID 1 (instead of bubblewrap's own): it ends the sandbox when the supervisor's
# lifeline closes, which the run of a sandboxed turn must give it (``TurnSpec.lifeline``)
INIT = Path(__file__).with_name("sandbox_init.py")
_HOPS = 40  # symlinks followed at most, as the kernel does
_INTERPRETERS = 3  # `#!` interpreters followed at most (a script run by a script ...)


def check() -> str | None:
    """Why no turn can be sandboxed here, in one line; None when bubblewrap works."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"the turn sandbox needs bubblewrap (`bwrap`), which is not on PATH; {INSTALL}"
    try:
        done = subprocess.run([bwrap, "--ro-bind", "/", "/", "--perms", "01777", "--tmpfs",
                               "/tmp", "--unshare-pid", "--die-with-parent", "--", "true"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not start ({exc}); {INSTALL}"
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[:200]
        return f"bubblewrap cannot make a sandbox here ({said}); {INSTALL}"
    return None


def wrap(argv: list[str], *, ws: Workspace, agent: str, endpoints: Endpoints, home: Path,
         env: Mapping[str, str] | None = None, paths: Iterable[Path] = ()) -> list[str]:
    """``argv`` run inside the sandbox for ``agent``'s turn; ``home`` is its CLI home (writable,
    wherever ``home`` in chatbox.toml put it), ``env`` the turn's environment (default: this
    process's), whose ``PATH`` finds the program and whose ``PYTHONPATH`` it keeps; ``paths`` are
    further paths the agent's config opens, read-only."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:  # removed since the start-up check: this turn fails, with the reason
        raise EngineError(f"bubblewrap (`bwrap`) is gone from PATH; {INSTALL}")
    env = os.environ if env is None else env
    root, data = str(ws.root), ws.data
    args = [bwrap, "--unshare-pid", "--as-pid-1", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *hide_the_host()]
    for path in [*runtime(argv, env, ws), *opened(paths)]:
        args += ["--ro-bind", str(path), str(path)]
    args += ["--bind", root, root, "--tmpfs", str(data)]
    ws.ensure_agent_dir(agent)
    own = [("--ro-bind", ws.agent_token_path(agent)), ("--bind", ws.agent_dir(agent)),
           ("--bind", home)]
    for endpoint in (endpoints.request, endpoints.events):
        path = ipc_path(endpoint)
        if path is not None:
            own.append(("--bind", path))
    if ws.config_path.exists():
        own.append(("--ro-bind", ws.config_path))
    own.append(("--ro-bind", ws.trail_path))  # the broker's alone: a turn reads it, never writes
    for flag, path in own:
        if Path(path).exists():
            args += [flag, str(path), str(path)]
    return [*args, "--chdir", root, "--", sys.executable, "-I", "-S", str(INIT), "--", *argv]


def hide_the_host() -> list[str]:
    """bwrap arguments that empty every top-level directory and file that is not the system."""
    args: list[str] = []
    emptied = set()
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name in SYSTEM or entry.name in KERNEL or entry.is_symlink():
                continue
            path = "/" + entry.name
            if entry.is_dir():
                args += (["--perms", "01777"] if path in SCRATCH else []) + ["--tmpfs", path]
                emptied.add(path)
            else:
                args += ["--ro-bind", "/dev/null", path]
    for path in SCRATCH:  # a scratch directory below an emptied one is made again
        if os.path.dirname(path) in emptied and os.path.isdir(path):
            args += ["--perms", "01777", "--dir", path]
    return args


def runtime(argv: list[str], env: Mapping[str, str], ws: Workspace) -> list[Path]:
    """What the turn's programs need from outside the system and the workspace, as few paths as
    cover it (none inside another)."""
    search = env.get("PATH", os.defpath)
    guarded = (_real(Path.home()), _real(ws.root))
    wanted = [Path(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
    if argv:
        wanted += program(argv[0], search, ws.root, guarded)
    wanted.append(Path("/etc/resolv.conf"))  # a symlink into /run on systemd-resolved hosts
    return _outermost({*_python(search, guarded), *_hidden(wanted, guarded)})


@functools.lru_cache(maxsize=4)
def _python(search: str, guarded: tuple[Path, Path]) -> frozenset[Path]:
    """The Python that runs the stub, the relay and ``chatbox``, and ChatBox's code: the same
    for every turn of this process, so found once."""
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    wanted = [*map(Path, prefixes), *_code(),
              *program(sys.executable, search, guarded[1], guarded)]
    return frozenset(_hidden(wanted, guarded))


def _hidden(paths: Iterable[Path], guarded: tuple[Path, Path]) -> set[Path]:
    """Of ``paths``, the real ones the sandbox would hide and may show: not in the system, not
    in the workspace (bound anyway), not too broad."""
    real = {_real(p) for p in paths if p.exists()}
    return {p for p in real if not _visible(p) and not _broad(p, guarded)
            and not p.is_relative_to(guarded[1])}


def program(name: str, search: str, cwd: Path, guarded: tuple[Path, Path],
            depth: int = 0) -> list[Path]:
    """What running ``name`` needs: the directory of each symlink on its way, the install tree
    of the file it ends at, and the same for that file's ``#!`` interpreter."""
    found = str(cwd / name) if os.sep in name else shutil.which(name, path=search)
    if found is None or not os.path.exists(found):
        return []  # the turn fails to start it and says so, as without a sandbox
    needed: list[Path] = []
    hop = Path(os.path.abspath(found))
    for _ in range(_HOPS):
        hop = _real(hop.parent) / hop.name
        if not hop.is_symlink():
            break
        if not _broad(hop.parent, guarded):
            needed.append(hop.parent)
        hop = hop.parent / os.readlink(hop)
    needed.append(_tree(hop, guarded))
    interpreter = _interpreter(hop)
    if interpreter and depth < _INTERPRETERS:
        needed += program(interpreter, search, cwd, guarded, depth + 1)
    return needed


def opened(paths: Iterable[Path]) -> list[Path]:
    """The paths the agent's config opens, each of which must exist."""
    found = []
    for path in paths:
        if not path.exists():
            raise EngineError(f"sandbox_paths: {path} does not exist")
        found.append(path)
    return found


def _tree(file: Path, guarded: tuple[Path, Path]) -> Path:
    """The install tree of ``file``: PREFIX for PREFIX/bin/NAME (its lib/, share/, node/ are
    beside bin/), else its directory; narrower where that would be too broad."""
    prefix = file.parent.parent if file.parent.name in ("bin", "sbin") else None
    for candidate in (prefix, file.parent):
        if candidate is not None and not _broad(candidate, guarded):
            return candidate
    return file


def _interpreter(file: Path) -> str | None:
    """The program a ``#!`` line runs (through ``env``: the program it names), or None."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return words[0] if words else None


def _code() -> list[Path]:
    """Where ChatBox's packages are (an editable install keeps them in the checkout)."""
    found = []
    for name in PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            found += [Path(p) for p in spec.submodule_search_locations or ()]
    return found


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _visible(path: Path) -> bool:
    """In the system directories, which the turn sees anyway."""
    parts = path.parts
    return len(parts) > 1 and parts[1] in SYSTEM


def _broad(path: Path, guarded: tuple[Path, Path]) -> bool:
    """``/``, a whole top-level directory, or a directory holding the operator's home or the
    workspace: binding it would show what the sandbox hides."""
    return len(path.parts) <= 2 or any(g == path or g.is_relative_to(path) for g in guarded)


def _outermost(paths: set[Path]) -> list[Path]:
    kept: list[Path] = []
    for path in sorted(paths, key=lambda p: (len(p.parts), p)):
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept
