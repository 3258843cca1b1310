"""A scripted model endpoint on 127.0.0.1 that real agent CLIs can run one turn against.

No LLM and no third-party packages: a threaded ``http.server`` that speaks just enough of

* Anthropic Messages      ``POST /v1/messages`` (+ ``/v1/messages/count_tokens``)  — claude, Kimi Code (anthropic)
* OpenAI Responses        ``POST /v1/responses``                                   — codex
* OpenAI Chat Completions ``POST /v1/chat/completions``                            — Kimi Code (kimi / openai)
* Gemini                  ``POST /v1beta/models/M:generateContent`` / ``:streamGenerateContent`` / ``:countTokens`` — gemini
* ``GET .../models``      a one-model list for CLIs that probe it

The script, per request (stateless, decided from the request itself):

1. the conversation already holds a tool result  -> a short final text (``final_text``);
2. else a tool whose name ends with ``reply`` is offered -> a call of that tool with
   ``{"post_id": post_id, "body": body}``;
3. else (title generation, no MCP tools) -> a short plain text (``plain_text``).

A request in JSON mode (gemini's ``generationConfig.responseMimeType = application/json``, e.g. its
model router) is answered first of all with a minimal instance of the requested schema.

``post_id``/``body`` come from the constructor, unless the request's text holds a marker
``<<reply post_id=12 body=some text>>`` (the body runs to ``>>``), which wins.

Every request is recorded (``.requests``: method, path, query, headers with secrets redacted,
JSON body, the api, the tool names offered, what was answered). ``mode`` selects the behaviour:
``"script"`` (above), ``"unauthorized"`` (every request gets the API's 401 error), ``"text"``
(never call a tool). The mode may be changed while running.

    with ModelServer(post_id=7, body="hi") as srv:   # or srv = ModelServer(); srv.start(); srv.stop()
        run_cli(base_url=srv.url)
        srv.requests, srv.tool_names()

    python -m tests.engines.model_server [--port 8765] [--post-id 7] [--body TEXT] [--mode script|unauthorized|text]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qs, urlsplit

SECRET_HEADERS = {"authorization", "x-api-key", "x-goog-api-key", "api-key", "cookie", "proxy-authorization"}
MARKER = re.compile(r"<<reply post_id=(\d+)(?: body=(.*?))?>>", re.S)
MODES = ("script", "unauthorized", "text")

# fixed usage figures per answered request, so tests can check what a CLI reports
USAGE_IN, USAGE_OUT = 120, 12


def _strings(obj: Any) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def offered_tools(api: str, body: dict) -> list[str]:
    """Names of the function tools a request offers the model, in the API's own spelling."""
    names: list[str] = []
    tools = body.get("tools") or []
    if api == "gemini":
        for t in tools:
            for d in (t.get("functionDeclarations") or t.get("function_declarations") or []):
                names.append(d.get("name", ""))
    elif api == "chat":
        for t in tools:
            fn = t.get("function") or {}
            names.append(fn.get("name") or t.get("name") or "")
    elif api == "responses":
        for t in tools:
            if t.get("type") == "namespace":  # codex may group MCP tools under a namespace
                ns = t.get("name", "")
                sep = "" if ns.endswith("_") else "__"
                for sub in t.get("tools") or []:  # shown as NAMESPACE__TOOL, e.g. mcp__chatbox__reply
                    names.append(f"{ns}{sep}{sub.get('name', '')}")
            elif t.get("name"):
                names.append(t["name"])
            elif t.get("type"):
                names.append(f"<{t['type']}>")
    else:  # anthropic
        for t in tools:
            names.append(t.get("name") or f"<{t.get('type')}>")
    return names


def schema_instance(schema: Any) -> Any:
    """A minimal value matching a JSON schema (for JSON-mode side requests, e.g. gemini's router)."""
    if not isinstance(schema, dict):
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return schema_instance(schema[key][0])
    t = str(schema.get("type", "object")).lower()
    if t == "object":
        props = schema.get("properties") or {}
        return {k: schema_instance(v) for k, v in props.items()}
    if t == "array":
        return []
    if t in ("integer", "number"):
        return max(1, int(schema.get("minimum", 1)))
    if t == "boolean":
        return False
    return "scripted"


def _json_mode_schema(api: str, body: dict) -> Any:
    if api == "gemini":
        gc = body.get("generationConfig") or {}
        if gc.get("responseMimeType") == "application/json":
            return gc.get("responseJsonSchema") or gc.get("responseSchema") or {}
    return None


def _has_tool_result(api: str, body: dict) -> bool:
    if api == "anthropic":
        for m in body.get("messages") or []:
            c = m.get("content")
            if isinstance(c, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in c):
                return True
    elif api == "responses":
        inp = body.get("input")
        if isinstance(inp, list):
            return any(isinstance(i, dict) and i.get("type", "").endswith("call_output") for i in inp)
    elif api == "chat":
        return any(m.get("role") == "tool" for m in body.get("messages") or [])
    elif api == "gemini":
        for c in body.get("contents") or []:
            if any("functionResponse" in p or "function_response" in p for p in c.get("parts") or []):
                return True
    return False


def _find_reply_tool(api: str, body: dict) -> tuple[str, str | None] | None:
    """(name to call, namespace or None) of the offered tool whose name ends with 'reply'."""
    if api == "responses":
        for t in body.get("tools") or []:
            if t.get("type") == "namespace":
                for sub in t.get("tools") or []:
                    if str(sub.get("name", "")).endswith("reply"):
                        return sub["name"], t.get("name")
            elif str(t.get("name", "")).endswith("reply"):
                return t["name"], None
        return None
    for name in offered_tools(api, body):
        if name.endswith("reply"):
            return name, None
    return None


class ModelServer:
    def __init__(self, post_id: int = 1, body: str = "hello from the scripted model", *,
                 mode: str = "script", port: int = 0, model: str = "scripted-model",
                 final_text: str = "Replied.", plain_text: str = "OK", delay: float = 0.0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.post_id, self.body, self.mode, self.model = post_id, body, mode, model
        self.final_text, self.plain_text, self.delay = final_text, plain_text, delay
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._seq = 0
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ModelServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="model-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- queries for tests -----------------------------------------------------------------
    def model_requests(self) -> list[dict]:
        """Requests that asked the model for an answer (not count_tokens / model lists)."""
        return [r for r in self.requests if r["answer"] not in ("count_tokens", "models", "not_found")]

    def tool_names(self) -> list[str]:
        """Union of the tool names offered in all requests, in first-seen order."""
        seen: dict[str, None] = {}
        for r in self.requests:
            for n in r["tools"]:
                seen.setdefault(n, None)
        return list(seen)

    def tool_calls(self) -> list[dict]:
        return [r for r in self.requests if r["answer"] == "tool_call"]

    # -- the script --------------------------------------------------------------------------
    def _next(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def _reply_args(self, body: dict) -> dict:
        post_id, text = self.post_id, self.body
        for s in _strings(body):
            m = MARKER.search(s)
            if m:
                post_id = int(m.group(1))
                if m.group(2) is not None:
                    text = m.group(2)
        return {"post_id": post_id, "body": text}

    def decide(self, api: str, body: dict) -> tuple[str, Any]:
        """('tool_call', (name, namespace, args)) | ('final', text) | ('text', text) | ('json', text)."""
        schema = _json_mode_schema(api, body)
        if schema is not None:
            return "json", json.dumps(schema_instance(schema))
        if self.mode == "script":
            if _has_tool_result(api, body):
                return "final", self.final_text
            tool = _find_reply_tool(api, body)
            if tool:
                return "tool_call", (tool[0], tool[1], self._reply_args(body))
        return "text", self.plain_text

    def record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)


# ---- wire formats -----------------------------------------------------------------------------

def _sse(events: list[tuple[str | None, Any]]) -> bytes:
    out = []
    for name, data in events:
        if name:
            out.append(f"event: {name}\n")
        out.append(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n")
    return "".join(out).encode()


def anthropic_answer(srv: ModelServer, body: dict, kind: str, what: Any) -> tuple[int, dict, bytes]:
    n = srv._next()
    model = body.get("model") or srv.model
    usage = {"input_tokens": USAGE_IN, "output_tokens": USAGE_OUT,
             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if kind == "tool_call":
        name, _ns, args = what
        block = {"type": "tool_use", "id": f"toolu_{n:04d}", "name": name, "input": args}
        stop = "tool_use"
    else:
        block = {"type": "text", "text": what}
        stop = "end_turn"
    message = {"id": f"msg_{n:04d}", "type": "message", "role": "assistant", "model": model,
               "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not body.get("stream"):
        return 200, {"Content-Type": "application/json"}, json.dumps(message).encode()
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    if block["type"] == "tool_use":
        cb_start = {**block, "input": {}}
        delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
    else:
        cb_start = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": block["text"]}
    events = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": cb_start}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": USAGE_OUT}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, _sse(events)


def responses_answer(srv: ModelServer, body: dict, kind: str, what: Any) -> tuple[int, dict, bytes]:
    n = srv._next()
    rid = f"resp_{n:04d}"
    model = body.get("model") or srv.model
    if kind == "tool_call":
        name, ns, args = what
        item = {"type": "function_call", "id": f"fc_{n:04d}", "call_id": f"call_{n:04d}", "name": name,
                "arguments": json.dumps(args), "status": "completed"}
        if ns:
            item["namespace"] = ns
    else:
        item = {"type": "message", "id": f"msg_{n:04d}", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": what, "annotations": []}]}
    usage = {"input_tokens": USAGE_IN, "input_tokens_details": {"cached_tokens": 0},
             "output_tokens": USAGE_OUT, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": USAGE_IN + USAGE_OUT}
    base = {"id": rid, "object": "response", "created_at": int(time.time()), "model": model}
    done = {**base, "status": "completed", "output": [item], "usage": usage}
    if not body.get("stream"):
        return 200, {"Content-Type": "application/json"}, json.dumps(done).encode()
    events: list[tuple[str | None, Any]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": {**base, "status": "in_progress", "output": []}}),
        ("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                        "sequence_number": 1,
                                        "item": {**item, "status": "in_progress"}}),
    ]
    if item["type"] == "message":
        events.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                      "output_index": 0, "content_index": 0, "delta": what,
                                                      "sequence_number": 2}))
    events += [
        ("response.output_item.done", {"type": "response.output_item.done", "output_index": 0,
                                       "sequence_number": 3, "item": item}),
        ("response.completed", {"type": "response.completed", "sequence_number": 4, "response": done}),
    ]
    return 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, _sse(events)


def chat_answer(srv: ModelServer, body: dict, kind: str, what: Any) -> tuple[int, dict, bytes]:
    n = srv._next()
    cid = f"chatcmpl-{n:04d}"
    model = body.get("model") or srv.model
    created = int(time.time())
    usage = {"prompt_tokens": USAGE_IN, "completion_tokens": USAGE_OUT, "total_tokens": USAGE_IN + USAGE_OUT}
    if kind == "tool_call":
        name, _ns, args = what
        call = {"id": f"call_{n:04d}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": what}
        finish = "stop"
    if not body.get("stream"):
        out = {"id": cid, "object": "chat.completion", "created": created, "model": model,
               "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
        return 200, {"Content-Type": "application/json"}, json.dumps(out).encode()

    def chunk(delta: dict, fin: str | None, **extra: Any) -> dict:
        return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": fin}], **extra}

    if kind == "tool_call":
        delta = {"role": "assistant", "content": None,
                 "tool_calls": [{"index": 0, **message["tool_calls"][0]}]}
    else:
        delta = {"role": "assistant", "content": what}
    events: list[tuple[str | None, Any]] = [(None, chunk(delta, None)), (None, chunk({}, finish, usage=usage))]
    events.append((None, "[DONE]"))
    return 200, {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, _sse(events)


def gemini_answer(srv: ModelServer, body: dict, kind: str, what: Any, stream: bool) -> tuple[int, dict, bytes]:
    srv._next()
    if kind == "tool_call":
        name, _ns, args = what
        part = {"functionCall": {"name": name, "args": args}}
    else:
        part = {"text": what}
    resp = {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": USAGE_IN, "candidatesTokenCount": USAGE_OUT,
                              "totalTokenCount": USAGE_IN + USAGE_OUT},
            "modelVersion": srv.model}
    if not stream:
        return 200, {"Content-Type": "application/json"}, json.dumps(resp).encode()
    return 200, {"Content-Type": "text/event-stream"}, _sse([(None, resp)])


def unauthorized(api: str) -> tuple[int, dict, bytes]:
    if api == "anthropic":
        body = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    elif api == "gemini":
        body = {"error": {"code": 401, "message": "API key not valid. Please pass a valid API key.",
                          "status": "UNAUTHENTICATED"}}
    else:
        body = {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                          "param": None, "code": "invalid_api_key"}}
    return 401, {"Content-Type": "application/json"}, json.dumps(body).encode()


def _api_of(path: str) -> str:
    if "/messages" in path:
        return "anthropic"
    if path.endswith("/responses") or "/responses/" in path:
        return "responses"
    if "/chat/completions" in path:
        return "chat"
    if "/models/" in path and ":" in path.rsplit("/", 1)[-1]:
        return "gemini"
    if path.rstrip("/").endswith("/models"):
        return "models"
    return "unknown"


def _handler_for(srv: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "scripted-model/1"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet
            pass

        def _read_body(self) -> tuple[Any, str]:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            enc = (self.headers.get("Content-Encoding") or "").lower()
            try:
                if enc == "gzip":
                    raw = gzip.decompress(raw)
                elif enc == "deflate":
                    raw = zlib.decompress(raw)
            except Exception:
                pass
            if not raw:
                return None, ""
            try:
                return json.loads(raw), ""
            except ValueError:
                return None, raw[:2000].decode("utf-8", "replace")

        def _send(self, status: int, headers: dict, payload: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("request-id", f"req_scripted_{len(srv.requests)}")
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            body, raw_text = self._read_body() if self.command in ("POST", "PUT") else (None, "")
            api = _api_of(path)
            headers = {k.lower(): ("<redacted>" if k.lower() in SECRET_HEADERS else v) for k, v in self.headers.items()}
            entry = {"t": time.time(), "method": self.command, "path": path, "query": parse_qs(parts.query),
                     "headers": headers, "body": body, "api": api, "tools": [], "answer": None}
            if raw_text:
                entry["raw"] = raw_text
            if srv.delay:
                time.sleep(srv.delay)
            if api == "unknown":
                entry["answer"] = "not_found"
                srv.record(entry)
                self._send(404, {"Content-Type": "application/json"},
                           json.dumps({"error": {"message": f"no route {path}", "code": 404}}).encode())
                return
            if srv.mode == "unauthorized":
                entry["answer"] = "401"
                srv.record(entry)
                self._send(*unauthorized("gemini" if api == "gemini" else
                                         "anthropic" if api == "anthropic" else "openai"))
                return
            if api == "models":
                entry["answer"] = "models"
                srv.record(entry)
                if path.startswith("/v1beta"):
                    data = {"models": [{"name": f"models/{srv.model}"}]}
                else:
                    data = {"object": "list", "data": [{"id": srv.model, "object": "model", "created": 0,
                                                        "owned_by": "scripted"}]}
                self._send(200, {"Content-Type": "application/json"}, json.dumps(data).encode())
                return
            body = body if isinstance(body, dict) else {}
            if api == "anthropic" and path.endswith("/count_tokens"):
                entry["answer"] = "count_tokens"
                entry["tools"] = offered_tools(api, body)
                srv.record(entry)
                self._send(200, {"Content-Type": "application/json"},
                           json.dumps({"input_tokens": USAGE_IN}).encode())
                return
            if api == "gemini" and path.endswith(":countTokens"):
                entry["answer"] = "count_tokens"
                srv.record(entry)
                self._send(200, {"Content-Type": "application/json"},
                           json.dumps({"totalTokens": USAGE_IN}).encode())
                return
            entry["tools"] = offered_tools(api, body)
            kind, what = srv.decide(api, body)
            entry["answer"] = kind
            if kind == "tool_call":
                entry["call"] = {"name": what[0], "namespace": what[1], "arguments": what[2]}
            srv.record(entry)
            if api == "anthropic":
                self._send(*anthropic_answer(srv, body, kind, what))
            elif api == "responses":
                self._send(*responses_answer(srv, body, kind, what))
            elif api == "chat":
                self._send(*chat_answer(srv, body, kind, what))
            else:
                self._send(*gemini_answer(srv, body, kind, what, stream=":streamGenerateContent" in path))

        def do_POST(self) -> None:
            self._handle()

        def do_GET(self) -> None:
            self._handle()

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.engines.model_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--post-id", type=int, default=1)
    ap.add_argument("--body", default="hello from the scripted model")
    ap.add_argument("--mode", choices=MODES, default="script")
    ap.add_argument("--dump", metavar="FILE", help="append every recorded request as a JSON line to FILE")
    a = ap.parse_args(argv)
    srv = ModelServer(a.post_id, a.body, mode=a.mode, port=a.port)
    if a.dump:
        dump = open(a.dump, "a", encoding="utf-8")
        orig = srv.record

        def record(entry: dict) -> None:
            orig(entry)
            dump.write(json.dumps(entry) + "\n")
            dump.flush()
        srv.record = record  # type: ignore[method-assign]
    srv.start()
    print(f"scripted model server on {srv.url} (mode {a.mode}); Ctrl-C to stop", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
