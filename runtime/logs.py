"""structlog, configured once in each process's main(): JSON to stderr, pretty on a TTY.

Logs never carry a token: the processors drop any key that names one.
"""

from __future__ import annotations

import functools
import logging
import sys

import structlog

_SECRET_KEYS = ("token", "secret", "password", "api_key", "authorization")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    """Does a field of this name hold a secret? Asked once per name (a line has ~10 fields)."""
    low = key.lower()
    return key != "token_path" and any(s in low for s in _SECRET_KEYS)


def _drop_secrets(_logger, _method, event: dict) -> dict:
    for key in [k for k in event if _is_secret(k)]:
        event[key] = "[redacted]"
    return event


def configure(level: str = "info", *, component: str, **bind: object) -> None:
    """structlog for our own lines, and the same rendering for what libraries log through the
    standard ``logging`` (SQLite's own log, forwarded by apsw; uvicorn's warnings): one format
    on stderr, never a bare ``ERROR:root:`` line between the JSON ones."""
    pretty = sys.stderr.isatty()
    renderer = structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer()
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _drop_secrets,
        structlog.processors.format_exc_info,  # a stdlib record's exc_info is set before it
    ]
    threshold = getattr(logging, level.upper(), logging.INFO)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component, **bind)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
