"""``chatbox serve`` against a real broker: the /v1 API, its checks, and the seed's routes.

Every test talks HTTP to a real server process on a free port, which talks to a real broker.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from chatbox.bus import wire
from chatbox.bus.errors import Refused
from chatbox.http import api, guard, seed
from tests.fleet import wait_for

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>&amp;'
CSP = guard.CSP


def concrete(path: str) -> str:
    return path.replace("{channel}", "%23general").replace("{seq}", "1").replace("{name}", "bot")


def every_route() -> list[tuple[str, str]]:
    routes = [(op.method, concrete(op.path)) for op in api.OPS if op.auth]
    routes += [("POST", f"/{t}") for t in seed.POSTED]
    routes += [("GET", "/rooms"), ("GET", "/get_post?id=1"), ("GET", "/health"),
               ("GET", "/metrics"), ("POST", "/mcp"), ("GET", "/mcp")]
    return routes


def test_every_route_but_healthz_refuses_a_request_without_a_principal(served):
    anon = served.client()
    bogus = served.client("cbx_not-a-token")
    routes = every_route()
    assert len(routes) > 30
    for method, path in routes:
        for c in (anon, bogus):
            r = c.request(method, path, json={})
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert r.headers["content-type"] == "application/problem+json"
            problem = r.json()
            assert problem["status"] == 401 and problem["code"] == "unauthorized"
            assert problem["detail"]
    assert anon.get("/healthz").json() == {"status": "ok"}


def test_a_post_round_trips_text_as_data_with_strict_headers(served):
    admin = served.admin()
    r = admin.post("/v1/channels/%23general/messages", json={"body": XSS, "title": XSS[:100]})
    assert r.status_code == 201, r.text
    msg = r.json()["message"]
    assert msg["body"] == XSS and msg["title"] == XSS[:100] and msg["kind"] == "post"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    page = admin.get("/v1/channels/general/messages", params={"since": msg["seq"] - 1}).json()
    assert [m["body"] for m in page["messages"]] == [XSS]
    assert set(page["messages"][0]) >= {"seq", "channel", "author", "kind", "title", "body",
                                        "in_reply_to", "chain", "hop", "tier", "status",
                                        "pinned", "turn", "created_at"}
    thread = admin.get(f"/v1/posts/{msg['seq']}").json()
    assert thread["post"]["body"] == XSS and thread["replies"] == []
    reply = admin.post(f"/v1/posts/{msg['seq']}/replies", json={"body": "re"}).json()["message"]
    assert reply["in_reply_to"] == msg["seq"]
    found = admin.get("/v1/search", params={"q": "onerror alert"}).json()["messages"]
    assert [m["seq"] for m in found] == [msg["seq"]]


def test_input_that_breaks_a_bound_is_a_problem_naming_the_field(served):
    admin = served.admin()
    r = admin.post("/v1/channels/%23general/messages", json={"body": "x", "tier": 7})
    assert r.status_code == 400 and r.json()["field"] == "tier", r.text
    r = admin.post("/v1/channels/%23general/messages", json={"body": "x", "colour": "red"})
    assert r.status_code == 400 and r.json()["field"] == "colour"
    r = admin.post("/v1/channels/%23no-such/messages", json={"body": "x"})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = admin.post("/v1/channels/%23general/messages", content=b"{not json")
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = admin.get("/v1/channels/general/messages", params={"limit": "0"})
    assert r.status_code == 400 and r.json()["field"] == "limit"
    r = admin.post("/v1/posts/999999/replies", json={"body": "x"})
    assert r.status_code == 404 and r.json()["field"] == "seq"


def test_the_broker_acl_applies_to_each_callers_own_token(served):
    bot = served.client(served.agent_token("bot", "#general"))
    assert bot.get("/v1/me").json() == {"name": "bot", "role": "agent"}
    r = bot.get("/v1/channels/%23dispatch/messages")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    post = bot.post("/v1/channels/%23general/messages",
                    json={"body": "plan", "title": "Plan", "type": "proposal", "tier": 2})
    assert post.status_code == 201 and post.json()["message"]["status"] == "pending"
    seq = post.json()["message"]["seq"]
    r = bot.post(f"/v1/posts/{seq}/approve", json={})
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = bot.post("/v1/agents/bot/pause", json={"reason": "nap"})
    assert r.status_code == 403


def test_escalations_list_what_waits_for_a_human_until_it_is_decided(served):
    bot = served.client(served.agent_token("bot", "#general"))
    admin = served.admin()
    seq = bot.post("/v1/channels/%23general/messages",
                   json={"body": "ship it?", "title": "Ship", "type": "proposal",
                         "tier": 2}).json()["message"]["seq"]
    asked = served.fleet.agent_client("bot").call(wire.Escalate(reason="stuck\non two lines"))
    pending = admin.get("/v1/escalations").json()["escalations"]
    by_post = {e["post"]: e for e in pending}
    assert set(by_post) == {seq, asked.message.seq}
    assert by_post[seq]["agent"] == "bot" and by_post[seq]["reason"] == "Ship"
    esc = by_post[asked.message.seq]
    assert esc["agent"] == "bot" and esc["reason"] == "stuck\non two lines"
    assert esc["message"]["channel"] == "#alerts"
    r = admin.post(f"/v1/posts/{seq}/deny", json={"reason": "not yet"})
    assert r.status_code == 200 and r.json()["message"]["kind"] == "decision"
    assert [e["post"] for e in admin.get("/v1/escalations").json()["escalations"]] == \
        [asked.message.seq]
    assert bot.get("/v1/escalations").json() == {"escalations": []}  # #alerts: humans only


def test_escalations_read_no_channel_for_their_caller(served):
    """/v1/escalations asks the broker for what is pending: listing it once read every channel
    as the caller, which marked each message in them delivered to it (an ack up to one it
    never saw was then accepted)."""
    bot = served.client(served.agent_token("bot", "#general"))
    seq = bot.post("/v1/channels/%23general/messages",
                   json={"body": "seen by nobody yet"}).json()["message"]["seq"]
    assert served.admin().get("/v1/escalations").json() == {"escalations": []}
    with pytest.raises(Refused, match="not delivered to you yet"):
        served.fleet.client().call(wire.Ack(channel="#general", up_to=seq))


def test_a_revoked_token_is_refused_at_once_and_its_session_ends(served):
    token = served.agent_token("bot", "#general")
    bot = served.client(token)
    browser = served.client()
    assert browser.post("/v1/session", json={"token": token}).status_code == 200
    assert bot.post("/v1/channels/%23general/messages", json={"body": "hi"}).status_code == 201
    served.fleet.client().call(wire.Revoke(name="bot"))
    r = bot.post("/v1/channels/%23general/messages", json={"body": "still me?"})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert bot.get("/v1/me").status_code == 401
    assert browser.get("/v1/rooms").status_code == 401


def test_pause_and_resume_an_agent(served):
    served.agent_token("bot")
    admin = served.admin()
    r = admin.post("/v1/agents/bot/pause", json={"reason": "lunch"})
    assert r.status_code == 200 and r.json()["agent"]["paused"] is True
    assert r.json()["agent"]["paused_reason"] == "lunch"
    agents = admin.get("/v1/agents").json()["agents"]
    assert [(a["name"], a["paused"]) for a in agents] == [("bot", True)]
    r = admin.post("/v1/agents/bot/resume")
    assert r.status_code == 200 and r.json()["agent"]["paused"] is False


def test_the_session_cookie_and_the_checks_on_writes(served):
    origin = served.url
    browser = served.client()
    r = browser.post("/v1/session", json={"token": served.fleet.admin_token},
                     headers={"Origin": origin})
    assert r.status_code == 200 and r.json() == {"name": "alice", "role": "admin"}
    cookie = r.headers["set-cookie"]
    assert re.fullmatch(r"chatbox_session=[\w-]+; HttpOnly; SameSite=Strict; Path=/", cookie)
    assert served.fleet.admin_token not in cookie
    assert browser.get("/v1/me").json()["name"] == "alice"
    body = {"body": "from the console"}
    r = browser.post("/v1/channels/%23general/messages", json=body)
    assert r.status_code == 403 and r.json()["code"] == "origin"  # no Origin with the cookie
    r = browser.post("/v1/channels/%23general/messages", json=body,
                     headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "origin"
    r = browser.post("/v1/channels/%23general/messages", json=body, headers={"Origin": origin})
    assert r.status_code == 201
    assert browser.delete("/v1/session", headers={"Origin": origin}).status_code == 200
    assert browser.get("/v1/me").status_code == 401
    assert served.client("x").post("/v1/session", json={"token": "nope"}).status_code == 401


def test_host_and_body_size_are_checked(served):
    admin = served.admin()
    r = admin.get("/v1/rooms", headers={"Host": f"rebound.example:{served.port}"})
    assert r.status_code == 421 and r.json()["code"] == "host"
    assert admin.get("/healthz", headers={"Host": f"localhost:{served.port}"}).status_code == 200
    r = admin.post("/v1/channels/%23general/messages",
                   json={"body": "x" * (guard.MAX_BODY + 10)})
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = admin.post("/v1/channels/%23general/messages", json={"body": "x" * (wire.MAX_BODY + 1)})
    assert r.status_code == 413 and r.json()["field"] == "body"


def test_the_seed_routes_answer_as_the_mcp_tools_do(served):
    token = served.agent_token("bot", "#general")
    bot = served.client(token)
    hello = bot.post("/hello", json={"name": "bot", "phase": "start",
                                     "default_channels": ["#general"], "agent_name": "bot",
                                     "session_token": "ignored"})
    assert hello.status_code == 200 and hello.json()["subscribed"] == ["#general"]
    chat = bot.post("/chat", json={"channel": "#general", "body": XSS}).json()
    assert chat["status"] == "ok" and chat["message_id"] == chat["seq"]
    post = bot.post("/start_post", json={"channel": "#general", "title": "T",
                                         "description": "d", "type": "task"}).json()
    got = bot.get("/get_post", params={"id": post["post_id"]}).json()
    assert got["post"]["id"] == post["post_id"] and got["post"]["title"] == "T"
    assert bot.post("/reply", json={"post_id": post["post_id"], "body": "r"}).json()["reply_id"]
    rooms = bot.get("/rooms").json()["channels"]
    assert "#general" in {c["name"] for c in rooms}
    assert bot.get("/health").json() == {"status": "ok", "agent": "bot", "role": "agent"}
    r = bot.post("/chat", json={"channel": "#general", "body": "x", "agent_name": "mallory"})
    assert r.status_code == 403 and r.json()["field"] == "agent_name"
    r = bot.post("/approve", json={"post_id": post["post_id"]})
    assert r.status_code in (400, 403)


def test_a_long_poll_never_delays_another_clients_post(served):
    """Eighty long-polls of 30 s are pending, and another client's post is answered at once
    meanwhile (the seed's single-threaded server made it wait for the long-poll)."""
    served.fleet.client().call(wire.CreateChannel(name="#quiet", topic="nothing happens"))
    waiter_token = served.agent_token("waiter", "#quiet")
    admin = served.admin()
    n = 80
    with ThreadPoolExecutor(max_workers=n) as pool:
        polls = [pool.submit(served.client(waiter_token, timeout=40).get, "/v1/wait",
                             params={"timeout_ms": 30_000}) for _ in range(n)]
        # the polls are in: wait for the server to count them (it serves /metrics meanwhile)
        wait_for(lambda: re.search(rf"^chatbox_http_listeners {n}\.0$",
                                   admin.get("/metrics").text, re.M),
                 timeout=20, interval=0.05, what=f"{n} long-polls pending at the server")
        took = []
        for i in range(5):
            t0 = time.perf_counter()
            r = admin.post("/v1/channels/%23general/messages", json={"body": f"meanwhile {i}"})
            took.append(time.perf_counter() - t0)
            assert r.status_code == 201
        assert max(took) < 1.0, took  # far below the 30 s long-poll
        assert not any(p.done() for p in polls), "a long-poll returned early"
        # and a post for the waiter ends every poll at once
        served.fleet.post("#quiet", "now")
        results = [p.result(timeout=10) for p in polls]
    assert all(r.status_code == 200 and r.json()["timed_out"] is False for r in results)
    assert all([m["body"] for m in r.json()["messages"]] == ["now"] for r in results)


def test_wait_times_out_empty_when_nothing_comes(served):
    bot = served.client(served.agent_token("bot", "#general"))
    t0 = time.monotonic()
    r = bot.get("/v1/wait", params={"timeout_ms": 300})
    assert r.status_code == 200 and r.json() == {"messages": [], "more": False, "timed_out": True}
    assert time.monotonic() - t0 >= 0.3
    r = bot.get("/v1/wait", params={"timeout_ms": 600_000})
    assert r.status_code == 400 and r.json()["field"] == "timeout_ms"


@pytest.mark.parametrize("path", ["/", "/console/app.js"])
def test_the_console_is_served_with_the_csp(served, path):
    r = served.client().get(path)
    if r.status_code == 404:
        pytest.skip("the console's files are not in this checkout")
    assert r.status_code == 200
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    assert served.client().get("/console/../main.py").status_code == 404
