"""What an operation did, as the node returns it: values for the caller's
reply and its one log record."""

from __future__ import annotations

import dataclasses
from typing import Any

from tornado_pubsub.logs import log_op


@dataclasses.dataclass(frozen=True)
class PublishResult:
    """What a publish did: the seq it took (or already had) and whether it was a repeat."""

    topic: str
    id: str
    seq: int
    duplicate: bool

    def log(self, **context: Any) -> None:
        """Emit the one ``publish`` record; ``context`` says who asked and how (conn_id, remote, via, ...)."""
        log_op(
            "publish",
            topic=self.topic,
            message_id=self.id,
            seq=self.seq,
            duplicate=self.duplicate,
            outcome="ok",
            **context,
        )


@dataclasses.dataclass(frozen=True)
class SubscribeResult:
    """What a subscribe did, for the caller's log record."""

    topic: str
    epoch: str
    last_seq: int
    replayed: int
    recovered: bool | None
    already: bool
