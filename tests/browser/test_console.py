"""The web console in a real browser (Chromium through Playwright) against real processes: a
broker, stub supervisors and ``chatbox serve``. Each test waits on what the page shows, with
Playwright's bounded waits; nothing is mocked but the desktop's notification centre."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
from playwright.sync_api import expect

from chatbox.bus import wire
from tests.browser.console import PHONE, log_in, start_server, stub_config
from tests.fleet import wait_for

CONSOLE = Path(__file__).resolve().parents[2] / "chatbox" / "http" / "console"
XSS = '<img src=x onerror="window.__pwned=1;alert(1)">'
# The one console error a page may show: the check of a session before anyone logged in.
SIGNED_OUT = re.compile(r"status of 401")


def errors(watched) -> list[str]:
    return [e for e in watched.errors if not SIGNED_OUT.search(e)]


def start_agents(fleet, channels=("#general",), wake="all", **agents: str) -> None:
    fleet.write_config(stub_config(**agents))
    for name in agents:
        fleet.add_agent(name, *channels, wake=wake)
        fleet.start_supervisor(name)


def messages(page):
    return page.locator("#messages > li")


def test_log_in_post_and_see_an_agents_reply_arrive_live(served, page, context, watched):
    start_agents(served.fleet, wake="mentions", echo="reply")
    log_in(page, served.url, served.fleet.admin_token)
    # the token is gone from the page: not in storage, not readable as a cookie
    assert page.evaluate("() => localStorage.length + sessionStorage.length") == 0
    assert page.evaluate("() => document.cookie") == ""
    [cookie] = [c for c in context.cookies() if c["name"] == "chatbox_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert served.fleet.admin_token not in page.content()

    page.get_by_label("Message", exact=True).fill("hello @echo")
    page.get_by_role("button", name="Send").click()
    mine = messages(page).filter(has_text="hello @echo")
    expect(mine).to_have_count(1)
    seq = int(mine.get_attribute("data-seq"))
    # the stub answers `ack SEQ`; it comes over the event stream, no reload
    expect(messages(page).filter(has_text=f"ack {seq}")).to_have_count(1, timeout=20_000)
    expect(page.locator("#live")).to_have_text("live")
    assert not errors(watched) and not watched.dialogs


def test_approving_a_pending_tier2_post_wakes_its_author(served, page):
    fleet = served.fleet
    start_agents(fleet, wake="mentions", kim="reply")
    log_in(page, served.url, fleet.admin_token)
    kim = fleet.agent_client("kim")
    pending = kim.call(wire.Post(channel="#general", kind="post", title="Deploy tonight",
                                 body="may I deploy?", type="proposal", tier=2)).message
    # the alerts badge counts it live; the alerts inbox shows it with its decision buttons
    expect(page.locator("#alerts-count")).to_have_text("1")
    page.get_by_role("button", name=re.compile("^Alerts")).click()
    card = page.locator("#alert-list > li").filter(has_text="Deploy tonight")
    expect(card).to_have_count(1)
    card.get_by_role("button", name=f"Approve #{pending.seq}").click()
    wait_for(lambda: fleet.client().call(wire.GetPost(seq=pending.seq)).post.status == "approved",
             what="the post approved")
    expect(page.locator("#alerts-empty")).to_be_visible()
    # the decision wakes kim, whose stub turn acknowledges it: shown live in the channel
    decision = next(m for m in fleet.read("#general")
                    if m.kind == "decision" and m.in_reply_to == pending.seq)
    page.get_by_role("button", name="Channels").click()
    expect(messages(page).filter(has_text=f"ack {decision.seq}")).to_have_count(1, timeout=20_000)


def open_denial(served, page):
    """kim's pending tier-2 post "Drop the table", seen as a human in the alerts, its card's
    deny form open: (kim's client, the post, the card)."""
    fleet = served.fleet
    fleet.add_agent("kim", "#general", wake="none")
    log_in(page, served.url, fleet.admin_token)
    kim = fleet.agent_client("kim")
    pending = kim.call(wire.Post(channel="#general", kind="post", title="Drop the table",
                                 body="ok?", tier=2)).message
    page.get_by_role("button", name=re.compile("^Alerts")).click()
    card = page.locator("#alert-list > li").filter(has_text="Drop the table")
    card.get_by_role("button", name=f"Deny #{pending.seq}").click()
    return kim, pending, card


def test_denying_needs_a_reason_and_records_it(served, page):
    fleet = served.fleet
    _, pending, card = open_denial(served, page)
    card.get_by_label(f"Reason for denying #{pending.seq}").fill("not on a Friday")
    card.get_by_role("button", name="Confirm deny").click()
    expect(page.locator("#alerts-empty")).to_be_visible()
    thread = fleet.client().call(wire.GetPost(seq=pending.seq))
    assert thread.post.status == "denied"
    assert any("not on a Friday" in (m.body or "") for m in thread.replies)


def test_a_live_update_keeps_a_denial_being_typed(served, page):
    """An alert arriving while a human types a reason for a denial re-renders the alerts
    without throwing away the open form or its text."""
    fleet = served.fleet
    kim, first, card = open_denial(served, page)
    reason = card.get_by_label(f"Reason for denying #{first.seq}")
    reason.fill("not on a Friday")
    kim.call(wire.Post(channel="#general", kind="post", title="Truncate the logs", body="ok?",
                       tier=2))
    expect(page.locator("#alert-list > li")).to_have_count(2)  # re-rendered, live
    expect(reason).to_have_value("not on a Friday")
    card.get_by_role("button", name="Confirm deny").click()
    wait_for(lambda: fleet.client().call(wire.GetPost(seq=first.seq)).post.status == "denied",
             what="the denial stored")


def test_an_escalation_shows_its_evidence_and_resumes_its_agent(served, page):
    """A give-up pauses the agent and escalates: the alert names the agent, the chain, the
    reason and the evidence, and resumes the agent from there."""
    fleet = served.fleet
    start_agents(fleet, wake="mentions", quitter="give-up")
    log_in(page, served.url, fleet.admin_token)
    start = fleet.post("#general", "@quitter please fix the build")
    expect(page.locator("#alerts-count")).to_have_text("1", timeout=20_000)
    page.get_by_role("button", name=re.compile("^Alerts")).click()
    card = page.locator("#alert-list > li")
    expect(card.locator(".facts")).to_contain_text("Agentquitter")
    expect(card.locator(".facts")).to_contain_text(f"Chain#{start.chain}")
    expect(card.locator(".evidence")).to_contain_text("I give up")
    card.get_by_role("button", name="Resume agent quitter").click()
    wait_for(lambda: not fleet.agent("quitter").paused, what="quitter resumed")
    expect(card.get_by_role("button", name="Resume agent quitter")).to_have_count(0)


def test_resume_a_paused_agent_from_the_roster(served, page):
    fleet = served.fleet
    start_agents(fleet, wake="all", napper="reply")
    fleet.client().call(wire.SetPaused(name="napper", paused=True, reason="night shift"))
    held = fleet.post("#general", "work for later")
    log_in(page, served.url, fleet.admin_token)
    page.get_by_role("button", name="Agents").click()
    card = page.locator("#agent-list > li[data-agent=napper]")
    expect(card).to_contain_text("night shift")
    card.get_by_role("button", name="Resume napper").click()
    # resumed, the held message is handled: the roster shows it live (state, then the last turn)
    expect(card.get_by_text("paused", exact=True)).to_have_count(0)
    expect(card).to_contain_text(re.compile(r"Last turn#\d+: ok"), timeout=20_000)
    wait_for(lambda: (t := fleet.agent("napper").last_turn) and held.seq in t.batch,
             what="the held message handled")
    assert not fleet.agent("napper").paused
    # and paused again from the console, with a reason
    card.get_by_label("Why pause napper").fill("enough for today")
    card.get_by_role("button", name="Pause napper").click()
    expect(card).to_contain_text("enough for today")
    assert fleet.agent("napper").paused


def test_the_roster_follows_an_agents_state_live(served, page):
    """WAKING/BUSY while a turn runs (held at a gate), ASLEEP with its last turn once it ends,
    each shown from the event stream without a reload."""
    fleet = served.fleet
    fleet.write_config(stub_config(gated=("slow",), slow="reply"))
    fleet.add_agent("slow", "#general")
    gate, env = fleet.gate()
    fleet.start_supervisor("slow", env=env)
    log_in(page, served.url, fleet.admin_token)
    page.get_by_role("button", name="Agents").click()
    card = page.locator("#agent-list > li[data-agent=slow]")
    expect(card.locator(".state")).to_have_text("ASLEEP")
    expect(card).to_contain_text("No turn yet.")
    fleet.post("#general", "take your time")
    expect(card.locator(".state")).to_have_text("BUSY")
    gate.open()
    expect(card.locator(".state")).to_have_text("ASLEEP")
    expect(card).to_contain_text(re.compile(r"Last turn#1: ok"))
    expect(card).to_contain_text("ack")


def test_an_agent_logged_in_sees_no_decision_buttons(served, page):
    fleet = served.fleet
    fleet.add_agent("kim", "#general", wake="none")
    fleet.add_agent("ann", "#general", wake="none")
    fleet.agent_client("kim").call(wire.Post(channel="#general", kind="post", title="Mine",
                                             body="approve me", tier=2))
    log_in(page, served.url, fleet.ws.read_token(fleet.ws.agent_token_path("ann")))
    expect(page.locator("#me")).to_contain_text("ann")
    expect(messages(page).filter(has_text="approve me")).to_have_count(1)
    page.get_by_role("button", name=re.compile("^Open the thread")).click()
    expect(page.locator("#thread-root")).to_contain_text("approve me")
    expect(page.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)


def test_markup_from_an_agent_shows_as_text_and_runs_nothing(served, page, watched):
    fleet = served.fleet
    fleet.client().call(wire.CreateChannel(name="#lab", topic=XSS))
    fleet.add_agent("mallory", "#general", "#lab", wake="none")
    mallory = fleet.agent_client("mallory")
    mallory.call(wire.Post(channel="#general", body=XSS))
    mallory.call(wire.Post(channel="#general", kind="post", title=XSS, body=XSS, tier=2))
    mallory.call(wire.Escalate(reason=XSS))
    log_in(page, served.url, fleet.admin_token)
    mallory.call(wire.Post(channel="#general", body=f"live {XSS}"))  # over the event stream
    expect(messages(page).filter(has_text=f"live {XSS}")).to_have_count(1)
    expect(messages(page).filter(has_text=XSS)).to_have_count(3)
    page.get_by_role("button", name=re.compile("^#lab")).click()
    expect(page.locator("#channel-topic")).to_have_text(XSS)
    page.get_by_role("button", name=re.compile("^Alerts")).click()
    expect(page.locator("#alert-list > li")).to_have_count(2)
    expect(page.locator("#alert-list").get_by_text(XSS).first).to_be_visible()
    page.get_by_role("button", name="Agents").click()
    expect(page.locator("#agent-list > li[data-agent=mallory]")).to_have_count(1)
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert not watched.dialogs and not errors(watched)


def test_every_response_has_a_strict_csp_and_the_console_no_inline_code(served):
    want = {"default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self'",
            "connect-src 'self'", "base-uri 'none'", "form-action 'self'",
            "frame-ancestors 'none'"}
    for route in ("/", "/console/app.js", "/console/app.css", "/healthz"):
        r = httpx.get(served.url + route)
        assert r.status_code == 200, route
        csp = {p.strip() for p in r.headers["content-security-policy"].split(";") if p.strip()}
        assert want <= csp, (route, csp)
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff"
    assert httpx.get(served.url + "/console/app.js").headers["content-type"].split(";")[0] in (
        "text/javascript", "application/javascript")
    html = httpx.get(served.url + "/").text
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    assert not re.search(r"\sstyle=|\son[a-z]+=", html), "an inline style or handler"
    for f in CONSOLE.iterdir():  # every asset is the server's own: it works offline
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f.name
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), f.name


def test_unread_counts_follow_what_was_read(served, page):
    fleet = served.fleet
    fleet.client().call(wire.CreateChannel(name="#ops", topic="operations"))
    log_in(page, served.url, fleet.admin_token)
    fleet.add_agent("kim", "#ops", wake="none")
    kim = fleet.agent_client("kim")
    kim.call(wire.Post(channel="#ops", body="disk at 91%"))
    kim.call(wire.Post(channel="#ops", body="disk at 95%"))
    ops = page.get_by_role("button", name=re.compile("^#ops"))
    expect(ops).to_have_accessible_name("#ops, 2 unread")
    ops.click()
    expect(messages(page)).to_have_count(2)
    expect(ops).to_have_accessible_name("#ops")
    page.reload()  # the count is the server's: reading acked it
    page.locator("#channel-name").filter(has_text="#general").wait_for()
    expect(page.get_by_role("button", name=re.compile("^#ops"))).to_have_accessible_name("#ops")


def test_thread_reply_and_search(served, page):
    fleet = served.fleet
    root = fleet.post("#general", "the zanzibar plan")
    log_in(page, served.url, fleet.admin_token)
    messages(page).filter(has_text="zanzibar").get_by_role("button", name=re.compile("thread")).click()
    expect(page.locator("#thread-h")).to_have_text(f"Thread #{root.seq}")
    page.get_by_label("Reply", exact=True).fill("agreed on zanzibar")
    page.locator("#reply-form").get_by_role("button", name="Reply").click()
    expect(page.locator("#thread-replies > li")).to_have_count(1)
    assert fleet.client().call(wire.GetPost(seq=root.seq)).replies[0].body == "agreed on zanzibar"
    page.get_by_label("Search messages").fill("zanzibar")
    page.get_by_label("Search messages").press("Enter")
    expect(page.locator("#search-results > li")).to_have_count(2)


def test_a_tier2_post_from_the_composer_waits_for_a_human(served, page):
    log_in(page, served.url, served.fleet.admin_token)
    page.get_by_label("Message", exact=True).fill("rotate the keys")
    page.get_by_text("As a titled post").click()
    page.get_by_label("Title").fill("Key rotation")
    page.get_by_label("Tier").select_option("2")
    page.get_by_role("button", name="Send").click()
    mine = messages(page).filter(has_text="Key rotation")
    expect(mine.locator(".status-pending")).to_have_count(1)
    post = served.fleet.read("#general")[-1]
    assert (post.title, post.tier, post.status) == ("Key rotation", 2, "pending")


def test_an_approval_waiting_raises_a_desktop_notification(served, context, page):
    context.grant_permissions(["notifications"], origin=served.url)
    # the desktop's notification centre is the one stand-in: it records what the page shows
    page.add_init_script("""(() => { const shown = []; window.__shown = shown;
      window.Notification = class { static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, opts) { shown.push([title, (opts || {}).body]); } }; })()""")
    fleet = served.fleet
    fleet.add_agent("kim", "#general", wake="none")
    log_in(page, served.url, fleet.admin_token)
    fleet.agent_client("kim").call(wire.Post(channel="#general", kind="post", title="Ship it",
                                             body="now?", tier=2))
    page.wait_for_function("() => window.__shown.length > 0")
    [[title, body]] = page.evaluate("() => window.__shown")
    assert title == "Approval waiting: Ship it" and body.startswith("kim in #general")


def test_keyboard_only_log_in_and_post(served, page):
    page.goto(served.url + "/")
    expect(page.get_by_label("Token")).to_be_focused()
    page.keyboard.type(served.fleet.admin_token)
    page.keyboard.press("Enter")
    page.locator("#channel-name").filter(has_text="#general").wait_for()
    page.get_by_label("Message", exact=True).focus()
    page.keyboard.type("typed, not clicked")
    page.keyboard.press("Control+Enter")
    expect(messages(page).filter(has_text="typed, not clicked")).to_have_count(1)
    # every stop of Tab is a real control (no clickable divs); BODY is the wrap past the end
    tags = set()
    for _ in range(25):
        page.keyboard.press("Tab")
        tags.add(page.evaluate("() => document.activeElement.tagName"))
    assert tags <= {"A", "BUTTON", "INPUT", "TEXTAREA", "SELECT", "SUMMARY", "BODY"}
    assert "BUTTON" in tags


def test_usable_at_a_phones_width(served, browser):
    ctx = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = ctx.new_page()
        log_in(page, served.url, served.fleet.admin_token)
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
        page.get_by_label("Message", exact=True).fill("from a phone")
        page.get_by_role("button", name="Send").click()
        item = messages(page).filter(has_text="from a phone")
        expect(item).to_be_visible()
        item.get_by_role("button", name=re.compile("thread")).click()
        expect(page.locator("#thread-h")).to_be_in_viewport()
        expect(page.locator("#messages")).to_be_hidden()  # the thread covers the channel
        page.get_by_role("button", name="Close thread").click()
        expect(item).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        ctx.close()


def test_log_out_ends_the_session(served, page, context):
    log_in(page, served.url, served.fleet.admin_token)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Token")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Token")).to_be_visible()
    assert page.request.get(served.url + "/v1/me").status == 401


def test_a_restarted_server_asks_to_log_in_again(served, page):
    """Sessions live as long as the server: the page notices its stream refused and says so."""
    log_in(page, served.url, served.fleet.admin_token)
    expect(page.locator("#live")).to_have_text("live")
    port = int(served.url.rsplit(":", 1)[1])
    served.server.stop()
    served.server, _ = start_server(served.fleet, port=port, name="serve-again")
    expect(page.locator("#login-error")).to_have_text("Your session ended: log in again.",
                                                      timeout=20_000)
    log_in(page, served.url, served.fleet.admin_token)
    expect(page.locator("#live")).to_have_text("live")


def test_a_wrong_token_is_one_clear_line(served, page):
    page.goto(served.url + "/")
    page.get_by_label("Token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#login-error")).to_have_text("That token is not valid (or was revoked).")
