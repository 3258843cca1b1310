"""``chatbox keys issue|revoke|list``: the CurveZMQ keys of the bus over tcp (docs/REMOTE.md).

Over ``tcp://`` the broker admits only the client keys of its allow-list. ``issue NAME`` makes a
key pair for a host named NAME, allows its public key, and writes its secret key with the
broker's public key (which that host pins) into a 0700 directory to copy into that host's
``.chatbox/curve/``; the first issue also makes the broker's own key pair and this host's key,
``local``, which ``issue local`` makes alone. ``revoke NAME`` takes NAME off the allow-list: the
broker refuses its handshakes, and the requests of its open connections, from then on. ``list``
shows the allow-list. A running broker reads the
allow-list again when it changes, so none of this needs a restart. No key is printed: they stay
in 0600 files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path

from chatbox.bus import curve
from chatbox.bus.bounds import NAME_RE
from chatbox.runtime import startup
from chatbox.runtime.exits import Exit

PROG = "chatbox keys"


def _name(text: str) -> str:
    if not NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a name (lower-case letters, digits "
                                         "and . _ -, at most 64, starting with a letter or digit)")
    return text


def parser() -> argparse.ArgumentParser:
    p = startup.Parser(prog=PROG, description="The CurveZMQ keys of the bus over tcp.")
    p.add_argument("--workspace", help="workspace directory (default: CHATBOX_WORKSPACE, or the "
                   "nearest directory upward holding .chatbox/)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=startup.Parser)
    issue = sub.add_parser("issue", help="a key for a host (first: the broker's keys)")
    issue.add_argument("name", type=_name, help=f"the host's name ({curve.LOCAL}: this host)")
    issue.add_argument("--out", type=Path, help="where to write the host's files (default "
                       ".chatbox/curve/issued/NAME/)")
    revoke = sub.add_parser("revoke", help="take a host's key off the allow-list")
    revoke.add_argument("name", type=_name)
    listing = sub.add_parser("list", help="the allow-list")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = startup.parse(parser(), argv)
    if isinstance(args, int):
        return args
    try:
        ws, _ = startup.begin(PROG, args.workspace, config=False)
        where = ws.curve_dir
        if args.command == "issue":
            return _issue(where, args.name, args.out)
        if args.command == "revoke":
            return _revoke(where, args.name)
        return _list(where, args.json)
    except startup.Startup as exc:
        return startup.report(exc)
    except (curve.CurveError, OSError) as exc:
        startup.say(PROG, exc)
        return Exit.FAILED


def _issue(where: Path, name: str, out: Path | None) -> int:
    keys, made = curve.ensure_server(where)
    if made:
        print(f"made the broker's key pair and this host's key ({curve.LOCAL}) in {where}")
    if name == curve.LOCAL:
        if not made:
            print(f"this host's key ({curve.LOCAL}) is in {where}")
        return Exit.OK
    out = (out or curve.issued_dir(where, name)).resolve()
    public = curve.issue(where, name, out)
    print(f"issued {name} (public key {public.decode()}): copy {out / 'client.secret'} and "
          f"{out / 'server.public'} into that host's .chatbox/curve/ (0600), then delete {out}")
    return Exit.OK


def _revoke(where: Path, name: str) -> int:
    if not curve.revoke(where, name):
        startup.say(PROG, f"no key issued for {name} (see `chatbox keys list`)")
        return Exit.FAILED
    print(f"revoked {name}: the broker refuses its handshakes and requests from now on")
    return Exit.OK


def _list(where: Path, as_json: bool) -> int:
    entries = curve.allowed(where)
    for name, public in entries.items():
        path = curve.allowed_dir(where) / f"{name}.public"
        issued = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.UTC)
        if as_json:
            print(json.dumps({"name": name, "public_key": public.decode(),
                              "issued_at": issued.isoformat(timespec="seconds")}))
        else:
            print(f"{name:<20} {public.decode()}  {issued:%Y-%m-%d %H:%M}Z")
    if not entries and not as_json:
        print(f"no keys issued (the bus over tcp needs `chatbox keys issue {curve.LOCAL}`)")
    return Exit.OK
