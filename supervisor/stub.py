"""The built-in scripted agent: no LLM, one answer per turn, for demos and tests.

``python -m supervisor.stub [--behaviour reply|fail|hang|repeat|give-up] [--delay SECONDS]``
reads the turn's batch as one JSON object on stdin::

    {"agent": "echo", "turn": 7, "messages": [{"seq": 12, ...}, {"seq": 13, ...}]}

and writes the reply body of this turn on stdout; the supervisor posts it in the thread of the
newest message of the batch. Behaviours:

    reply    ``ack 12 13`` — every seq of the batch, ascending (a test sees what each turn handled)
    fail     a line on stderr, exit 3                 (the failure circuit)
    hang     sleeps until killed                      (the wall cap)
    repeat   the same sentence every turn             (the livelock detector)
    give-up  ``I give up: I cannot complete this task.``   (the give-up detector)

It is spawned for every turn, so it imports the standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

BEHAVIOURS = ("reply", "fail", "hang", "repeat", "give-up")
REPEATED = "I will look into it."
GIVE_UP = "I give up: I cannot complete this task."
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAIL = 0, 2, 3


def answer(behaviour: str, batch: dict) -> str:
    """The reply body of one turn for the behaviours that answer."""
    if behaviour == "repeat":
        return REPEATED
    if behaviour == "give-up":
        return GIVE_UP
    seqs = sorted(int(m["seq"]) for m in batch.get("messages") or ())
    return " ".join(["ack", *map(str, seqs)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.stub", description=__doc__.split("\n")[0])
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="reply")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    try:
        batch = json.loads(sys.stdin.buffer.read() or b"{}")
        if not isinstance(batch, dict):
            raise ValueError("the batch is not a JSON object")
        reply = answer(args.behaviour, batch)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"stub: unreadable batch on stdin: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.delay > 0:
        time.sleep(args.delay)
    if args.behaviour == "hang":
        while True:  # until the supervisor's wall cap kills us
            time.sleep(3600)
    if args.behaviour == "fail":
        print(f"stub: failing on purpose (turn {batch.get('turn')})", file=sys.stderr)
        return EXIT_FAIL
    sys.stdout.write(reply + "\n")
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
