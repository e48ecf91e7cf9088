"""Business events from D365 F&O: the event model, Event Grid envelopes, validation, settings, handlers,
ControlNumber sequencing and the storage layout. The use cases are in ``shared.pipelines.business_events``.
"""

from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.handlers import HandlerRegistry, default_registry
from shared.events.model import BusinessEvent, EventFormatError, EventSource, parse_event
from shared.events.settings import BusinessEventSettings

__all__ = [
    "BusinessEvent",
    "BusinessEventSettings",
    "EventFormatError",
    "EventSource",
    "HandlerContext",
    "HandlerRegistry",
    "HandlerResult",
    "PermanentHandlerError",
    "default_registry",
    "parse_event",
]
