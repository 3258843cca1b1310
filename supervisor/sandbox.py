"""Every turn in an OS sandbox (bubblewrap), so a turn acts only as its agent (DESIGN §7).

Inside, the turn sees the system read-only, the workspace writable (agents work on the project),
``chatbox.toml`` read-only, and of the data directory only what is its agent's own: its token
(read-only), its directory (CLI home, MCP socket, API key) and the bus sockets. The admin token,
other agents' tokens, the database and the audit key are simply not there. ``HOME`` is the
agent's CLI home and ``TMPDIR`` a directory in it (``/tmp`` stays as the system has it, read-only:
a Python or a CLI installed under it keeps working). The turn gets its own PID namespace: when the turn ends, or
its supervisor dies (``--die-with-parent`` under the supervisor's ``PR_SET_PDEATHSIG``), every
process it started dies with it, a ``setsid`` grandchild included. The network is shared: the
engine needs its model.

``sandbox = "none"`` in an agent's config turns this off, deliberately; the supervisor logs it at
start. Where bubblewrap cannot start, the supervisor refuses to run turns (``check``) — there is
no silent fallback.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from chatbox.bus.endpoints import Endpoints, ipc_path
from chatbox.runtime.workspace import Workspace
from chatbox.supervisor.errors import EngineError

INSTALL = "install bubblewrap (Debian: apt-get install bubblewrap; make test does it as root)"


def check() -> str | None:
    """Why no turn can be sandboxed here, in one line; None when bubblewrap works."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return f"the turn sandbox needs bubblewrap (`bwrap`), which is not on PATH; {INSTALL}"
    try:
        done = subprocess.run([bwrap, "--ro-bind", "/", "/", "--unshare-pid", "--die-with-parent",
                               "--", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap does not start ({exc}); {INSTALL}"
    if done.returncode != 0:
        said = " ".join(done.stderr.split())[:200]
        return f"bubblewrap cannot make a sandbox here ({said}); {INSTALL}"
    return None


def wrap(argv: list[str], *, ws: Workspace, agent: str, endpoints: Endpoints,
         home: Path) -> list[str]:
    """``argv`` run inside the sandbox for ``agent``'s turn; ``home`` is its CLI home (writable,
    wherever ``home`` in chatbox.toml put it)."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:  # removed since the start-up check: this turn fails, with the reason
        raise EngineError(f"bubblewrap (`bwrap`) is gone from PATH; {INSTALL}")
    root, data = str(ws.root), ws.data
    args = [bwrap, "--die-with-parent", "--unshare-pid", "--new-session",
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--bind", root, root,
            "--tmpfs", str(data)]
    ws.ensure_agent_dir(agent)
    own = [("--ro-bind", ws.agent_token_path(agent)), ("--bind", ws.agent_dir(agent)),
           ("--bind", home)]
    for endpoint in (endpoints.request, endpoints.events):
        path = ipc_path(endpoint)
        if path is not None:
            own.append(("--bind", path))
    if ws.config_path.exists():
        own.append(("--ro-bind", ws.config_path))
    for flag, path in own:
        if Path(path).exists():
            args += [flag, str(path), str(path)]
    return [*args, "--chdir", root, "--", *argv]
