"""Where business events live in blob storage (container names come from ``BusinessEventSettings``).

    {raw}/      {BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json   the event as received;
                created with If-None-Match: *, so its existence is the "already received" fact
    {state}/    business-events/{EventId}.json              processing status record (attempts, outcome)
                business-events-retry/{EventId}.json        a failed event waiting for its next attempt
                business-events-redeliveries/{EventId}/{time}-{id}.json   one per repeat delivery
                control-numbers/{BusinessEventId}/{legal entity}.json   ControlNumber high-water mark
                business-events-sweep.lock                  lease: one sweep at a time
    {poison}/   {EventId}.json                              handling gave up: the error and the raw path
    {enriched}/ {BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json   the enrich handler's output

Every segment comes from the event itself (never the receipt time), so a redelivery maps to the same path.

Blob index tags on a raw blob (when the sweep is on): ``received`` (receipt time, ``yyyy-mm-ddThh:mm:ssZ``,
fixed width so text order is time order) and ``processing`` = ``pending``, set in the receiver's one
conditional create; processing sets ``processing`` = ``started`` once the event's status record exists.
"""

from __future__ import annotations

from datetime import UTC, datetime

from shared.events.model import BusinessEvent

__all__ = [
    "PENDING_TAGS_QUERY",
    "RAW_TEMPLATE",
    "RETRY_PREFIX",
    "STARTED_TAGS",
    "STATE_PREFIX",
    "SWEEP_LOCK",
    "control_number_path",
    "pending_tags",
    "poison_path",
    "raw_path",
    "retry_path",
    "state_path",
    "tag_time",
]

RAW_TEMPLATE = "{business_event_id}/{legal_entity}/{yyyy}/{mm}/{dd}/{event_id}.json"
STATE_PREFIX = "business-events/"
RETRY_PREFIX = "business-events-retry/"
SWEEP_LOCK = "business-events-sweep.lock"
#: Tags of a raw blob whose processing has begun (the ``received`` tag is no longer needed then).
STARTED_TAGS = {"processing": "started"}
#: Raw blobs with no processing record yet, received before ``{cutoff}`` (a ``tag_time``).
PENDING_TAGS_QUERY = "\"processing\" = 'pending' AND \"received\" < '{cutoff}'"


def tag_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pending_tags(received_at: datetime) -> dict[str, str]:
    return {"received": tag_time(received_at), "processing": "pending"}


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
