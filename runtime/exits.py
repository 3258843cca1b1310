"""Named exit codes, one table for every console script (``broker``, ``supervisor``, ``chatbox``).

The built-in stub agent (supervisor/stub.py) runs isolated, without this package, and keeps its
own small table.
"""

from __future__ import annotations

import enum


class Exit(enum.IntEnum):
    OK = 0
    FAILED = 1        # refused by the broker, or failed
    USAGE = 2         # a bad command line
    UNREACHABLE = 3   # the broker is not answering
    ABORTED = 4       # stopped at once by a second INT/TERM, work left unreported
