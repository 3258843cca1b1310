"""Fixtures: a temporary workspace with a real broker process, and a fleet spawner."""

from __future__ import annotations

import pytest

from tests.fleet import Fleet


@pytest.fixture
def fleet():
    """A fresh workspace with a running broker; every process is killed at teardown."""
    f = Fleet()
    try:
        f.start_broker()
        yield f
    finally:
        f.close()


@pytest.fixture
def bare_fleet():
    """A fresh, initialised workspace with no process started yet."""
    f = Fleet()
    try:
        yield f
    finally:
        f.close()
