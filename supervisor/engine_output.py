"""What a turn's output says, per engine: an error result, its cause, its usage, whether the
chatbox MCP server connected. Every reader tolerates noise (non-JSON lines, a cut last line).

The formats, as the real CLIs print them (docs/ENGINES.md):

    claude  stream-json: {"type":"system","subtype":"init","mcp_servers":[{name,status}]} …
            {"type":"result","is_error":…,"result":"Not logged in …","usage":{…},"total_cost_usd":…}
    codex   {"type":"turn.completed","usage":{…}} | {"type":"turn.failed","error":{"message":…}}
    gemini  {"type":"result","status":"success"|"error","error":{"message":…},"stats":{…}}
    kimi    assistant/tool lines; errors on stderr ("error: failed to run prompt: …"); usage in
            $KIMI_CODE_HOME/sessions/…/<session_id>/agents/main/wire.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

CAUSE_CHARS = 500
_NOISE = ("Warning: 256-color", "Ripgrep is not available", "Reading additional input from stdin",
          "WARNING: proceeding, even though")


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None  # only where the CLI reports one


def events(output: str) -> list[dict]:
    """The JSON objects of a JSONL output; other lines skipped."""
    found = []
    for line in output.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            found.append(event)
    return found


def _last(evs: list[dict], kind: str) -> dict | None:
    return next((e for e in reversed(evs) if e.get("type") == kind), None)


def engine_error(engine: str, output: str) -> bool:
    """True when the output carries the engine's own error result, whatever the exit code."""
    evs = events(output)
    match engine:
        case "claude":
            final = _last(evs, "result")
            return final is not None and (final.get("is_error") is True
                                          or str(final.get("subtype", "")).startswith("error"))
        case "codex":
            # turn.failed, or a top-level error that no turn.completed followed (item-level
            # "error" items are warnings and do not count)
            kinds = [e.get("type") for e in evs]
            return "turn.failed" in kinds or ("error" in kinds and "turn.completed" not in kinds)
        case "gemini":
            return any((e.get("type") == "result" and e.get("status") == "error")
                       or (e.get("type") == "error" and e.get("severity") == "error") for e in evs)
        case _:
            # stub and command have no error record; Kimi Code reports errors on stderr + exit 1
            return False


def cause(engine: str, output: str, stderr: str) -> str | None:
    """The CLI's own words for why a turn went wrong, or the last telling stderr line."""
    evs = events(output)
    text = None
    match engine:
        case "claude":
            final = _last(evs, "result")
            if final is not None and final.get("is_error"):
                text = str(final.get("result") or final.get("subtype") or "")
        case "codex":
            failed = _last(evs, "turn.failed")
            if failed is not None:
                text = str((failed.get("error") or {}).get("message", ""))
            elif (err := _last(evs, "error")) is not None:
                text = str(err.get("message", ""))
        case "gemini":
            final = _last(evs, "result")
            if final is not None and final.get("status") == "error":
                text = str((final.get("error") or {}).get("message", ""))
    if not text:
        lines = [ln.strip() for ln in stderr.splitlines()
                 if ln.strip() and not any(ln.strip().startswith(n) for n in _NOISE)]
        errors = [ln for ln in lines if ln.lower().startswith("error")]
        text = (errors or lines or [""])[-1]
    text = " ".join(text.split())
    return text[:CAUSE_CHARS] or None


def mcp_connected(engine: str, output: str) -> bool | None:
    """Whether the CLI says the chatbox server connected; None where the CLI does not say."""
    if engine != "claude":
        return None
    init = next((e for e in events(output) if e.get("type") == "system"
                 and e.get("subtype") == "init"), None)
    if init is None:
        return None
    servers = {s.get("name"): s.get("status") for s in init.get("mcp_servers") or []
               if isinstance(s, dict)}
    return servers.get("chatbox") == "connected"


def usage(engine: str, output: str, home: Path | None = None) -> Usage | None:
    """Tokens (and cost, where the CLI reports it) of one turn; None if the CLI said nothing."""
    evs = events(output)
    match engine:
        case "claude":
            final = _last(evs, "result")
            if final is None or not isinstance(final.get("usage"), dict):
                return None
            u = final["usage"]
            cost = final.get("total_cost_usd")
            return Usage(input_tokens=_int(u.get("input_tokens")) + _int(
                u.get("cache_creation_input_tokens")) + _int(u.get("cache_read_input_tokens")),
                output_tokens=_int(u.get("output_tokens")),
                cost_usd=float(cost) if isinstance(cost, (int, float)) else None)
        case "codex":
            done = [e.get("usage") for e in evs if e.get("type") == "turn.completed"
                    and isinstance(e.get("usage"), dict)]
            if not done:
                return None
            return Usage(input_tokens=sum(_int(u.get("input_tokens")) for u in done),
                         output_tokens=sum(_int(u.get("output_tokens")) for u in done))
        case "gemini":
            final = _last(evs, "result")
            stats = final.get("stats") if final else None
            if not isinstance(stats, dict):
                return None
            return Usage(input_tokens=_int(stats.get("input_tokens")),
                         output_tokens=_int(stats.get("output_tokens")))
        case "kimi":
            return _kimi_usage(evs, home)
    return None


def _kimi_usage(evs: list[dict], home: Path | None) -> Usage | None:
    hint = next((e for e in evs if e.get("type") == "session.resume_hint"), None)
    session = str((hint or {}).get("session_id") or "")
    if home is None or not session or "/" in session or session.startswith("."):
        return None
    records = []
    for wire_file in (home / "kimi" / "sessions").glob(f"*/{session}/agents/main/wire.jsonl"):
        try:
            text = wire_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        records += [e.get("usage") for e in events(text) if e.get("type") == "usage.record"
                    and isinstance(e.get("usage"), dict)]
    if not records:
        return None
    return Usage(input_tokens=sum(_int(u.get("inputOther")) + _int(u.get("inputCacheRead"))
                                  + _int(u.get("inputCacheCreation")) for u in records),
                 output_tokens=sum(_int(u.get("output")) for u in records))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
