"""What every domain call gets: the connection, who is asking, the time, and the outbox.

Events are collected in the outbox while the transaction is open and published only after it
commits (never before), so a subscriber that reacts at once finds the row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apsw

from chatbox.bus import wire


@dataclass(frozen=True)
class Principal:
    name: str
    role: str  # agent | human | admin

    @property
    def is_human(self) -> bool:
        return self.role in ("human", "admin")


@dataclass
class Ctx:
    db: apsw.Connection
    principal: Principal
    now: float
    outbox: list[tuple[bytes, wire.Event]] = field(default_factory=list)

    def publish(self, topic: bytes, event: wire.Event) -> None:
        self.outbox.append((topic, event))
