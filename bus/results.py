"""What the broker answers: a result of each kind, or an error — never neither, never both.

Part of the wire (``chatbox.bus.wire`` re-exports every name here). A reply is a tagged union
(``reply`` = ``result`` | ``error``): a :class:`ResultReply` always carries a result, an
:class:`ErrorReply` always an error, and a frame with neither fails to decode. Both answer
``.result`` and ``.error`` (the one they lack is None), so a reader may test either.
"""

from __future__ import annotations

from typing import ClassVar

from chatbox.bus.codes import ErrorCode
from chatbox.bus.shapes import AgentInfo, AgentStateName, ChannelInfo, Message, Subscription, _Frame

class Result(_Frame, tag_field="kind"):
    pass


class Done(Result, tag="done"):
    pass


class PrincipalResult(Result, tag="principal"):
    name: str
    role: str


class MessageResult(Result, tag="message"):
    message: Message


class MessagesResult(Result, tag="messages"):
    messages: list[Message]
    last_seq: int = 0
    more: bool = False


class ThreadResult(Result, tag="thread"):
    post: Message
    replies: list[Message]


class AckResult(Result, tag="ack"):
    channel: str
    last_read: int


class SubscriptionResult(Result, tag="subscription"):
    agent: str
    subscription: Subscription


class RoomsResult(Result, tag="rooms"):
    channels: list[ChannelInfo]


class ChannelResult(Result, tag="channel"):
    channel: ChannelInfo


class AgentCreated(Result, tag="agent_created"):
    name: str
    token: str
    token_path: str


class AgentsResult(Result, tag="agents"):
    agents: list[AgentInfo]


class AgentResult(Result, tag="agent"):
    agent: AgentInfo


class StatusResult(Result, tag="status"):
    version: str
    workspace: str
    pid: int
    started_at: float
    last_seq: int
    channels: int
    principals: int
    agents: list[AgentInfo] = []


class HelloResult(Result, tag="hello"):
    state: AgentStateName
    epoch: int
    paused: bool
    pending: bool
    """True when the supervisor should claim now (work is waiting, wake or no wake)."""


class ClaimResult(Result, tag="claim"):
    turn: int | None
    epoch: int
    messages: list[Message] = []


class ReportResult(Result, tag="report"):
    state: AgentStateName
    epoch: int = 0
    acked: dict[str, int] = {}
    reply: Message | None = None


ResultBody = (
    Done | PrincipalResult | MessageResult | MessagesResult | ThreadResult | AckResult
    | SubscriptionResult | RoomsResult | ChannelResult | AgentCreated | AgentsResult | AgentResult
    | StatusResult | HelloResult | ClaimResult | ReportResult
)


class Error(_Frame):
    """A refusal: a stable code, one sentence for a human, and the field at fault if any."""

    code: ErrorCode
    message: str
    field: str | None = None


class ResultReply(_Frame, tag_field="reply", tag="result"):
    """The request was done; ``result`` says what came of it."""

    rid: int
    result: ResultBody
    error: ClassVar[None] = None


class ErrorReply(_Frame, tag_field="reply", tag="error"):
    """The request was refused, or failed; nothing of it was applied."""

    rid: int
    error: Error
    result: ClassVar[None] = None


Reply = ResultReply | ErrorReply
