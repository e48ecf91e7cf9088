"""What a business-event handler is: a callable ``(event, context) -> HandlerResult | None``.

A handler may run more than once for one event (at-least-once delivery, retries, replays), so it must be
idempotent: write with conditional creates or overwrite the same target, and give downstream systems the
``EventId`` to deduplicate on. Raise :class:`PermanentHandlerError` when retrying cannot help (the event
goes to the poison area at once); any other exception is retried with backoff up to the attempt limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.d365.errors import D365AuthError, D365ClientError, ODataQueryError

if TYPE_CHECKING:
    from shared.context import AppContext
    from shared.events.model import BusinessEvent
    from shared.events.sequence import SequenceVerdict
    from shared.events.settings import BusinessEventProcessingSettings

__all__ = [
    "Handler",
    "HandlerContext",
    "HandlerFactory",
    "HandlerResult",
    "PermanentHandlerError",
    "is_permanent",
]


class PermanentHandlerError(Exception):
    """Retrying cannot help (bad configuration, data the target refuses): poison the event now."""


@dataclass(frozen=True)
class HandlerContext:
    """What a handler gets besides the event."""

    app: AppContext
    settings: BusinessEventProcessingSettings
    sequence: SequenceVerdict  # out_of_order: a newer event of this kind was already handled
    attempt: int  # 1 on the first attempt
    raw_blob: str  # "container/path" of the stored raw event


@dataclass(frozen=True)
class HandlerResult:
    summary: str
    outputs: tuple[str, ...] = ()  # what the handler wrote or sent, e.g. "events-enriched/<path>"


Handler = Callable[["BusinessEvent", HandlerContext], "HandlerResult | None"]
#: Builds a handler from its configuration options (raise ValueError for bad options).
HandlerFactory = Callable[[Mapping[str, Any]], Handler]


def is_permanent(exc: BaseException) -> bool:
    """Errors a retry cannot fix: ours, a refused request (4xx other than auth), a malformed query."""
    if isinstance(exc, PermanentHandlerError | ODataQueryError):
        return True
    return isinstance(exc, D365ClientError) and not isinstance(exc, D365AuthError)
