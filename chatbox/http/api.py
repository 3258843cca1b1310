"""The ``/v1`` API: one operation per thing the MCP tools and the CLI do, each one bus request
made with the caller's own token (so the broker's role and ACL apply exactly as over the bus).

Channels in paths carry their ``#`` percent-encoded (``/v1/channels/%23general/messages``) or
leave it out (``/v1/channels/general/messages``). Fields the broker names in a refusal are
renamed to the API's (``in_reply_to`` is ``reply_to`` here, ``post_id`` is the path's ``seq``).
The long-poll, the event stream and the escalations live in their own modules.
"""

from __future__ import annotations

from starlette.responses import Response

from chatbox.bus import wire
from chatbox.http import escalations, shapes, stream
from chatbox.http.auth import clear_cookie_header, cookie_header, whoami, COOKIE
from chatbox.http.routes import Ctx, Op, respond

SEQ = {"post_id": "seq", "seq": "seq"}


# --------------------------------------------------------------------------- session

async def login(ctx: Ctx) -> Response:
    who = await whoami(ctx.srv.bridge, ctx.body.token)
    sid = ctx.srv.sessions.open(ctx.body.token)
    return respond(shapes.Me(name=who.name, role=who.role),
                   headers={"Set-Cookie": cookie_header(sid)})


async def logout(ctx: Ctx) -> Response:
    sid = ctx.request.cookies.get(COOKIE)
    if sid:
        ctx.srv.sessions.close(sid)
    return respond(shapes.LoggedOut(status="ok"), headers={"Set-Cookie": clear_cookie_header()})


async def me(ctx: Ctx) -> shapes.Me:
    who = await whoami(ctx.srv.bridge, ctx.caller.token)
    return shapes.Me(name=who.name, role=who.role)


async def healthz(ctx: Ctx) -> shapes.Health:
    return shapes.Health(status="ok")


# --------------------------------------------------------------------------- reading

async def rooms(ctx: Ctx) -> shapes.Rooms:
    res = await ctx.call(wire.Rooms())
    return shapes.Rooms(channels=[shapes.channel(c) for c in res.channels])


async def history(ctx: Ctx) -> shapes.Messages:
    q = ctx.query
    res = await ctx.call(wire.Read(channel=ctx.path["channel"], since=q.since, limit=q.limit))
    return shapes.Messages(messages=shapes.messages(res.messages), last_seq=res.last_seq,
                           more=res.more)


async def thread(ctx: Ctx) -> shapes.Thread:
    res = await ctx.call(wire.GetPost(seq=ctx.path["seq"]), SEQ)
    return shapes.Thread(post=shapes.message(res.post), replies=shapes.messages(res.replies))


async def search(ctx: Ctx) -> shapes.Found:
    q = ctx.query
    res = await ctx.call(wire.Search(query=q.q, channel=q.channel, limit=q.limit),
                         {"query": "q"})
    return shapes.Found(messages=shapes.messages(res.messages))


async def inbox(ctx: Ctx) -> shapes.Inbox:
    res = await ctx.call(wire.Inbox(limit=ctx.query.limit))
    return shapes.Inbox(messages=shapes.messages(res.messages), more=res.more)


async def agents(ctx: Ctx) -> shapes.Agents:
    res = await ctx.call(wire.ListAgents())
    return shapes.Agents(agents=[shapes.agent(a) for a in res.agents])


# --------------------------------------------------------------------------- writing

async def post(ctx: Ctx) -> shapes.OneMessage:
    b = ctx.body
    req = wire.Post(channel=ctx.path["channel"], body=b.body,
                    kind="post" if b.title is not None else "chat", title=b.title, type=b.type,
                    tier=b.tier, in_reply_to=b.reply_to, turn=b.turn)
    res = await ctx.call(req, {"in_reply_to": "reply_to"})
    return shapes.OneMessage(message=shapes.message(res.message))


async def reply(ctx: Ctx) -> shapes.OneMessage:
    res = await ctx.call(wire.Post(in_reply_to=ctx.path["seq"], body=ctx.body.body,
                                   turn=ctx.body.turn), {"in_reply_to": "seq"})
    return shapes.OneMessage(message=shapes.message(res.message))


async def approve(ctx: Ctx) -> shapes.OneMessage:
    res = await ctx.call(wire.Decide(seq=ctx.path["seq"], approve=True,
                                     reason=ctx.body.comment), {**SEQ, "reason": "comment"})
    return shapes.OneMessage(message=shapes.message(res.message))


async def deny(ctx: Ctx) -> shapes.OneMessage:
    res = await ctx.call(wire.Decide(seq=ctx.path["seq"], approve=False,
                                     reason=ctx.body.reason), SEQ)
    return shapes.OneMessage(message=shapes.message(res.message))


async def ack(ctx: Ctx) -> shapes.Acked:
    res = await ctx.call(wire.Ack(channel=ctx.body.channel, up_to=ctx.body.up_to))
    return shapes.Acked(channel=res.channel, last_read=res.last_read)


async def pause(ctx: Ctx) -> shapes.OneAgent:
    res = await ctx.call(wire.SetPaused(name=ctx.path["name"], paused=True,
                                        reason=ctx.body.reason))
    return shapes.OneAgent(agent=shapes.agent(res.agent))


async def resume(ctx: Ctx) -> shapes.OneAgent:
    res = await ctx.call(wire.SetPaused(name=ctx.path["name"], paused=False))
    return shapes.OneAgent(agent=shapes.agent(res.agent))


async def openapi(ctx: Ctx) -> Response:
    await whoami(ctx.srv.bridge, ctx.caller.token)
    return Response(ctx.srv.openapi, media_type="application/json")


S = shapes
OPS: list[Op] = [
    Op("GET", "/healthz", "healthz", "Is the server up (no token needed)", healthz, S.Health,
       auth=False),
    Op("GET", "/v1/openapi.json", "openapi", "This document", openapi, None),
    Op("POST", "/v1/session", "login", "Exchange a token for a session cookie", login, S.Me,
       body=S.SessionIn, auth=False),
    Op("DELETE", "/v1/session", "logout", "End the cookie's session", logout, S.LoggedOut,
       auth=False),
    Op("GET", "/v1/me", "me", "Who the caller is", me, S.Me),
    Op("GET", "/v1/rooms", "rooms", "Channels the caller can see, with unread counts", rooms,
       S.Rooms),
    Op("GET", "/v1/channels/{channel}/messages", "history", "A channel's history, oldest first",
       history, S.Messages, query=S.MessagesQuery),
    Op("POST", "/v1/channels/{channel}/messages", "post", "Post a message (a post if titled)",
       post, S.OneMessage, body=S.PostIn, status=201),
    Op("GET", "/v1/posts/{seq}", "thread", "A post and its replies", thread, S.Thread),
    Op("POST", "/v1/posts/{seq}/replies", "reply", "Reply in a post's thread", reply,
       S.OneMessage, body=S.ReplyIn, status=201),
    Op("POST", "/v1/posts/{seq}/approve", "approve", "Approve a pending tier-2 post", approve,
       S.OneMessage, body=S.ApproveIn),
    Op("POST", "/v1/posts/{seq}/deny", "deny", "Deny a pending tier-2 post, with a reason", deny,
       S.OneMessage, body=S.DenyIn),
    Op("GET", "/v1/search", "search", "Full-text search over what the caller may read", search,
       S.Found, query=S.SearchQuery),
    Op("GET", "/v1/inbox", "inbox", "What is unacked for the caller", inbox, S.Inbox,
       query=S.InboxQuery),
    Op("POST", "/v1/ack", "ack", "Acknowledge a channel up to a seq", ack, S.Acked, body=S.AckIn),
    Op("GET", "/v1/escalations", "escalations", "What waits for a human", escalations.route,
       S.Escalations),
    Op("GET", "/v1/agents", "agents", "The roster with each agent's state and last turn", agents,
       S.Agents),
    Op("POST", "/v1/agents/{name}/pause", "pause", "Pause an agent", pause, S.OneAgent,
       body=S.PauseIn),
    Op("POST", "/v1/agents/{name}/resume", "resume", "Resume a paused agent", resume,
       S.OneAgent, body=S.Empty),
    Op("GET", "/v1/wait", "wait", "Block until something arrives for the caller (bounded)",
       stream.wait, S.Waited, query=S.WaitQuery),
    Op("GET", "/v1/events", "events", "Server-sent events: messages and agent states",
       stream.events, None, media="text/event-stream"),
]
