"""The built-in scripted agent: no LLM, one answer per turn, for demos and tests.

``python -m chatbox.supervisor.stub [--behaviour reply|fail|hang|repeat|give-up] [--delay SECONDS]
[--gate FIFO]`` reads the turn's batch as one JSON object on stdin::

    {"agent": "echo", "turn": 7, "messages": [{"seq": 12, ...}, {"seq": 13, ...}]}

and writes the reply body of this turn on stdout; the supervisor posts it in the thread of the
newest message of the batch. Behaviours:

    reply    ``ack 12 13`` — every seq of the batch, ascending (a test sees what each turn handled)
    fail     a line on stderr, exit 3                 (the failure circuit)
    hang     sleeps until killed                      (the wall cap)
    repeat   the same sentence every turn             (the livelock detector)
    give-up  ``I give up: I cannot complete this task.``   (the give-up detector)

A gate holds the turn until someone opens it, so a test can act while a turn is surely running
(instead of betting on a delay): ``--gate FIFO``, by default ``$CHATBOX_STUB_GATE`` (an agent's
config passes that variable to its turns with ``env = ["CHATBOX_STUB_GATE"]``). After reading its
batch the stub opens the FIFO for reading, which blocks until a writer holds it open; the test
opens the gate by opening the FIFO itself (``os.O_RDWR``: it never blocks) and keeps it open, so
every later turn passes at once. Without a gate nothing waits.

It is spawned for every turn, so it imports the standard library only; ``BEHAVIOURS`` is
``chatbox.runtime.config.Behaviour`` spelled out (a unit test keeps the two equal).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

BEHAVIOURS = ("reply", "fail", "hang", "repeat", "give-up")
REPEATED = "I will look into it."
GIVE_UP = "I give up: I cannot complete this task."
EXIT_OK, EXIT_BAD_INPUT, EXIT_FAIL = 0, 2, 3
GATE_VARIABLE = "CHATBOX_STUB_GATE"


def answer(behaviour: str, batch: dict) -> str:
    """The reply body of one turn for the behaviours that answer."""
    if behaviour == "repeat":
        return REPEATED
    if behaviour == "give-up":
        return GIVE_UP
    seqs = sorted(int(m["seq"]) for m in batch.get("messages") or ())
    return " ".join(["ack", *map(str, seqs)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chatbox.supervisor.stub",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--behaviour", choices=BEHAVIOURS, default="reply")
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--gate", default=os.environ.get(GATE_VARIABLE) or None, metavar="FIFO",
                        help=f"wait until this FIFO has a writer (default: ${GATE_VARIABLE})")
    args = parser.parse_args(argv)
    try:
        batch = json.loads(sys.stdin.buffer.read() or b"{}")
        if not isinstance(batch, dict):
            raise ValueError("the batch is not a JSON object")
        reply = answer(args.behaviour, batch)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"stub: unreadable batch on stdin: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.gate:
        with open(args.gate, "rb"):  # blocks until the gate is opened (a writer holds it)
            pass
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
