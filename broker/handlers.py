"""Request routing: one decoded envelope in, one reply out, inside the batch's transaction.

Each request runs in its own savepoint, so it is all-or-nothing while the batch shares one commit
(group commit). A request with an idempotency key that was answered before gets the first answer
again, and is not applied twice.
"""

from __future__ import annotations

import errno
import os
import time

import apsw
import msgspec
import structlog

from chatbox.bus import wire
from chatbox.broker import (agents, audit, channels, escalations, messages, offsets, principals,
                            turns)
from chatbox.broker.context import Ctx, Principal
from chatbox.broker.dispatcher import Dispatcher
from chatbox.broker.errors import BrokerError, Invalid, StoreError
from chatbox.broker.store import Store, is_disk_full
from chatbox.runtime.workspace import Workspace, new_token, write_secret

log = structlog.get_logger("broker")

# What a broker whose disk refuses writes still answers: every read, and the requests that only
# mark what they showed (Read, Inbox, Attach). Their marks are held in memory
# (messages.HeldMarks).
ANSWERED_UNSTORED: frozenset[type[wire.Request]] = wire.READ_ONLY


class Handlers:
    def __init__(self, store: Store, workspace: Workspace, dispatcher: Dispatcher,
                 version: str, started_at: float):
        self.store = store
        self.db = store.db
        self.workspace = workspace
        self.auth = principals.Auth(store.db)
        self.dispatcher = dispatcher
        self.version = version
        self.started_at = started_at

    # ------------------------------------------------------------------ envelope
    def handle(self, payload: bytes, now: float, outbox: list[tuple[bytes, wire.Event]], *,
               unstored: str | None = None) -> bytes:
        """Answer one request frame. Every refusal becomes an error reply; it raises only an
        ``apsw.Error`` that ended the batch's transaction itself (SQLite rolled it back).

        ``unstored``: the batch could not be stored, for this reason; only a request of
        ``ANSWERED_UNSTORED`` is answered, or a write stored before (its first answer), every
        other is refused with it (transient)."""
        try:
            env = wire.envelope_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return _bad_frame(_salvage_rid(payload), exc, len(payload))
        out_of_bounds: wire.Error | None = None
        try:
            req = wire.request_decoder.decode(env.req)
            op = type(req).__name__
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            found = wire.refusal(exc, env.req) if isinstance(exc, msgspec.ValidationError) else None
            if found is None:
                return _bad_frame(env.rid, exc, len(payload))
            op, out_of_bounds = found[0].__name__, found[1]
        principal = self.admit(env.v, env.rid, env.token, op)
        if isinstance(principal, bytes):
            return principal
        if out_of_bounds is not None:  # a field broke its bound: refused, naming the field
            log.info("refused", op=op, principal=principal.name, code=out_of_bounds.code,
                     field=out_of_bounds.field)
            return wire.encode(wire.ErrorReply(rid=env.rid, error=out_of_bounds))
        ctx = Ctx(self.db, principal, now)
        keyed = env.idem is not None and wire.keyed(req)
        try:
            with self.store.savepoint():
                if keyed:
                    stored = self.db.execute(
                        "SELECT reply FROM requests WHERE principal = ? AND key = ?",
                        (principal.name, env.idem)).get
                    if stored is not None:
                        first = msgspec.msgpack.decode(stored, type=wire.ResultBody)
                        if isinstance(first, wire.ClaimResult) and first.turn is not None:
                            first = turns.claimed(ctx, first)  # kept without its batch
                        return wire.encode(wire.ResultReply(rid=env.rid, result=first))
                if unstored is not None and type(req) not in ANSWERED_UNSTORED:
                    return _error(env.rid, "store", unstored)  # (a first answer is replayed)
                result = self.route(ctx, req)
                audit.request(ctx, req, result)  # in the request's savepoint, after it succeeded
                if keyed:
                    self.db.execute("INSERT INTO requests(principal, key, reply, created_at) "
                                    "VALUES (?, ?, ?, ?)",
                                    (principal.name, env.idem, wire.encode(_kept(result)), now))
        except BrokerError as exc:
            # every refusal leaves a trace (never the request's text): who, what, why
            level = log.warning if exc.code in ("forbidden", "unauthorized") else log.info
            level("refused", op=op, principal=principal.name, code=exc.code,
                  field=exc.field)
            return _error(env.rid, exc.code, exc.message, exc.field)
        except apsw.Error as exc:
            if not self.db.in_transaction:
                raise  # SQLite ended the batch's transaction: none of it is stored
            if not is_disk_full(exc):
                log.exception("request_failed", op=op)
                return _error(env.rid, "internal", "internal error; see the broker log")
            return _error(env.rid, "store", self.not_stored(exc))
        except Exception:
            log.exception("request_failed", op=op)
            return _error(env.rid, "internal", "internal error; see the broker log")
        outbox.extend(ctx.outbox)
        return wire.encode(wire.ResultReply(rid=env.rid, result=result))

    def admit(self, v: int, rid: int, token: str, op: str) -> Principal | bytes:
        """The principal of a request of this version and token, or the encoded refusal."""
        if v != wire.PROTOCOL_VERSION:
            return _error(rid, "version", f"protocol version {v} is not supported "
                          f"(this broker speaks {wire.PROTOCOL_VERSION})")
        try:
            return self.auth.authenticate(token)
        except BrokerError as exc:
            log.warning("auth_failed", op=op)
            audit.auth_failure(self.db, op, time.time())
            return _error(rid, exc.code, exc.message)

    # ------------------------------------------------------------------ routing
    def route(self, ctx: Ctx, req: wire.Request) -> wire.Result:
        d = self.dispatcher
        match req:
            case wire.Post():
                return wire.MessageResult(message=self.post(ctx, req))
            case wire.Read(channel=ch, since=since, limit=limit):
                return messages.read(ctx, ch, since, limit)
            case wire.GetPost(seq=seq):
                return messages.thread(ctx, seq)
            case wire.Ack(channel=ch, up_to=up_to):
                return offsets.ack(ctx, ch, up_to)
            case wire.Inbox(limit=limit):
                return offsets.inbox(ctx, limit)
            case wire.Subscribe(channel=ch, view=view, wake=wake, agent=agent):
                result = channels.subscribe(ctx, ch, view, wake, agent)
                return result
            case wire.Unsubscribe(channel=ch, agent=agent):
                channels.unsubscribe(ctx, ch, agent)
                return wire.Done()
            case wire.Rooms():
                return wire.RoomsResult(channels=channels.rooms(ctx))
            case wire.CreateChannel(name=name, topic=topic, kind=kind):
                return wire.ChannelResult(channel=channels.create(ctx, name, topic, kind))
            case wire.SetFlag(seq=seq, action=action, resolution=resolution):
                return wire.MessageResult(message=messages.set_flag(ctx, seq, action, resolution))
            case wire.Search(query=q, channel=ch, limit=limit):
                return messages.search(ctx, q, ch, limit)
            case wire.Sync(nonce=nonce):
                ctx.publish(wire.sync_topic(nonce), wire.SyncEvent(nonce=nonce))
                return wire.Done()
            case wire.Attach():
                turns.connect(ctx, ctx.principal.name, req.turn)
                return wire.Done()
            case wire.Whoami():
                return wire.PrincipalResult(name=ctx.principal.name, role=ctx.principal.role)
            case wire.Status():
                return self.status(ctx)
            case wire.AddAgent():
                return self.add_agent(ctx, req)
            case wire.ListAgents():
                return wire.AgentsResult(agents=[agents.visible(ctx, a)
                                                 for a in agents.list_all(ctx)])
            case wire.ShowAgent(name=name):
                return wire.AgentResult(agent=agents.visible(ctx, agents.info(ctx, name)))
            case wire.SetPaused(name=name, paused=paused, reason=reason):
                return wire.AgentResult(agent=agents.set_paused(ctx, d, name, paused, reason))
            case wire.Revoke(name=name):
                agents.require_admin(ctx, "revoke a principal")
                principals.revoke(ctx.db, name, ctx.now)
                d.on_revoked(ctx, name)
                self.auth.forget()
                self.workspace.agent_token_path(name).unlink(missing_ok=True)
                return wire.Done()
            case wire.Decide(seq=seq, approve=approve, reason=reason):
                decision, _ = escalations.decide(ctx, seq, approve, reason)
                d.on_message(ctx, decision)
                return wire.MessageResult(message=decision)
            case wire.Escalate(reason=reason, seq=seq, turn=turn):
                chain = d.open_turn(ctx, ctx.principal.name, turn)[0] if turn is not None else None
                return wire.MessageResult(message=escalations.escalate(ctx, reason, seq, chain))
            case wire.Decisions(channel=ch, limit=limit):
                return escalations.decisions(ctx, ch, limit)
            case wire.Pending(since=since, limit=limit):
                return escalations.pending(ctx, since, limit)
            case wire.Hello():
                return d.hello(ctx, req)
            case wire.Claim():
                return d.claim(ctx, req)
            case wire.TurnReport():
                return d.report(ctx, req)
        raise Invalid(f"unknown request {type(req).__name__}")

    def post(self, ctx: Ctx, req: wire.Post) -> wire.Message:
        return self.dispatcher.post(ctx, req)

    def add_agent(self, ctx: Ctx, req: wire.AddAgent) -> wire.AgentCreated:
        token = new_token()
        agents.add(ctx, req, token)
        path = self.workspace.agent_token_path(req.name)
        try:
            write_secret(path, token)
        except OSError as exc:  # a read-only workspace: refused, and the agent not added
            if exc.errno == errno.ENOSPC:
                raise StoreError(f"not stored: the disk holding {self.workspace.data} is "
                                 "full; free space there and send it again") from None
            raise StoreError(f"cannot write the token file {path}: {exc.strerror}; the "
                             "workspace must be writable by the broker") from None
        log.info("agent_added", agent=req.name, token_path=str(path))
        return wire.AgentCreated(name=req.name, token=token, token_path=str(path))

    def status(self, ctx: Ctx) -> wire.StatusResult:
        return wire.StatusResult(
            version=self.version, workspace=str(self.workspace.root), pid=os.getpid(),
            started_at=self.started_at,
            last_seq=self.db.execute("SELECT coalesce(max(seq), 0) FROM messages").get,
            channels=self.db.execute("SELECT count(*) FROM channels").get,
            principals=self.db.execute("SELECT count(*) FROM principals").get,
            agents=[agents.visible(ctx, a) for a in agents.list_all(ctx)])

    def not_stored(self, exc: BaseException) -> str:
        """The one line a write refused by the database gets (transient: it may land later)."""
        if is_disk_full(exc):
            return (f"not stored: the disk holding {self.workspace.data} is full; free space "
                    "there and send it again (reads are still answered)")
        return f"not stored: {exc}"

    def on_supervisor_exit(self, fd: int, now: float) -> list[tuple[bytes, wire.Event]]:
        """The pidfd ``fd`` became readable: record that its supervisor exited."""
        sup = self.dispatcher.liveness.exited(fd)
        return [] if sup is None else self.supervisor_gone(sup, now)

    def supervisor_gone(self, sup: str, now: float) -> list[tuple[bytes, wire.Event]]:
        """Record that supervisor ``sup`` exited: its turn, if any, is lost."""
        log.info("supervisor_exited", supervisor=sup)
        ctx = Ctx(self.db, Principal("broker", "admin"), now)
        self.dispatcher.on_supervisor_exit(ctx, sup)
        return ctx.outbox


def _kept(result: wire.Result) -> wire.Result:
    """What is kept of a keyed request's first result for its retries: a token is shown once
    and never stored (a replay gets the file's path only); a claim is kept without its batch,
    which ``turns.claimed`` rebuilds from the turn's row."""
    if isinstance(result, wire.AgentCreated):
        return msgspec.structs.replace(result, token="")
    if isinstance(result, wire.ClaimResult):
        return msgspec.structs.replace(result, messages=[])
    return result


def _error(rid: int, code: wire.ErrorCode, message: str, field: str | None = None) -> bytes:
    return wire.encode(wire.ErrorReply(rid=rid, error=wire.Error(code=code, message=message,
                                                                 field=field)))


def _bad_frame(rid: int, exc: Exception, size: int) -> bytes:
    log.warning("bad_frame", error=str(exc)[:200], size=size)
    return _error(rid, "bad_frame", f"undecodable request: {exc}")


def _salvage_rid(payload: bytes) -> int:
    try:
        obj = msgspec.msgpack.decode(payload)
        rid = obj.get("rid") if isinstance(obj, dict) else None
        return rid if isinstance(rid, int) else 0
    except Exception:
        return 0
