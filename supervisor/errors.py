"""Errors raised by the supervisor package: one base class, one line each."""

from __future__ import annotations


class SupervisorError(Exception):
    """Base class of every error raised by the supervisor package."""


class EngineError(SupervisorError):
    """A turn command cannot be built: unknown engine, or options that engine cannot use."""
