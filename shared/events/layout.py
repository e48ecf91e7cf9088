"""Where business events live in blob storage (container names come from ``BusinessEventSettings``).

    {raw}/      {BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json   the event as received;
                created with If-None-Match: *, so its existence is the "already received" fact
    {state}/    business-events/{EventId}.json              processing status record (attempts, outcome)
                business-events-retry/{EventId}.json        a failed event waiting for its next attempt
                control-numbers/{BusinessEventId}/{legal entity}.json   ControlNumber high-water mark
    {poison}/   {EventId}.json                              handling gave up: the error and the raw path
    {enriched}/ {BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json   the enrich handler's output

Every segment comes from the event itself (never the receipt time), so a redelivery maps to the same path.
"""

from __future__ import annotations

from shared.events.model import BusinessEvent

__all__ = [
    "RAW_TEMPLATE",
    "RETRY_PREFIX",
    "STATE_PREFIX",
    "control_number_path",
    "poison_path",
    "raw_path",
    "retry_path",
    "state_path",
]

RAW_TEMPLATE = "{business_event_id}/{legal_entity}/{yyyy}/{mm}/{dd}/{event_id}.json"
STATE_PREFIX = "business-events/"
RETRY_PREFIX = "business-events-retry/"


def raw_path(event: BusinessEvent) -> str:
    moment = event.event_time
    return (
        f"{event.event_key}/{event.legal_entity_key}/"
        f"{moment.year:04d}/{moment.month:02d}/{moment.day:02d}/{event.event_id}.json"
    )


def state_path(event_id: str) -> str:
    return f"{STATE_PREFIX}{event_id}.json"


def retry_path(event_id: str) -> str:
    return f"{RETRY_PREFIX}{event_id}.json"


def poison_path(event_id: str) -> str:
    return f"{event_id}.json"


def control_number_path(event: BusinessEvent) -> str:
    return f"control-numbers/{event.event_key}/{event.legal_entity_key}.json"
