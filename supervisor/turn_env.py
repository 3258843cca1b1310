"""The environment of a turn's process: only what is allowed, never the supervisor's whole."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping

DEFAULT_ALLOW: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TMPDIR", "TZ",
    "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME",
    # Windows
    "SYSTEMROOT", "COMSPEC", "PATHEXT", "APPDATA", "LOCALAPPDATA", "USERPROFILE",
)


def allowed_env(base: Mapping[str, str], extra: Mapping[str, str],
                allow: Iterable[str] = DEFAULT_ALLOW) -> dict[str, str]:
    """The child's environment: names of ``DEFAULT_ALLOW`` and ``allow`` taken from ``base``,
    then ``extra`` laid over them. ``allow`` only adds names; ``NAME_*`` allows a prefix."""
    names = {*DEFAULT_ALLOW, *allow}
    exact = {n for n in names if not n.endswith("*")}
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    fold = str.upper if sys.platform == "win32" else str  # Windows names are case-insensitive
    exact = {fold(n) for n in exact}
    prefixes = tuple(fold(p) for p in prefixes)
    env = {k: v for k, v in base.items() if fold(k) in exact or (prefixes and fold(k).startswith(prefixes))}
    env.update(extra)
    return env
