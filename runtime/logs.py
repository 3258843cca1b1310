"""structlog, configured once in each process's main(): JSON to stderr, pretty on a TTY.

Logs never carry a token: the processors drop any key that names one.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SECRET_KEYS = ("token", "secret", "password", "api_key", "authorization")


def _drop_secrets(_logger, _method, event: dict) -> dict:
    for key in list(event):
        if key != "token_path" and any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure(level: str = "info", *, component: str, **bind: object) -> None:
    pretty = sys.stderr.isatty()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _drop_secrets,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer() if pretty else structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(component=component, **bind)
