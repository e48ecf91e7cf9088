"""The business-events settings: receipt and storage (``BusinessEventSettings``) and processing
(``BusinessEventProcessingSettings``), two sections so that a broken handler configuration never stops
events from being received and stored.

Receipt and storage (``settings.section(BusinessEventSettings)``):

- ``BUSINESS_EVENTS_CONTAINER`` (default ``events``): received raw events,
  ``{BusinessEventId}/{legal entity}/{yyyy}/{mm}/{dd}/{EventId}.json``; the processing blob trigger watches
  it (the binding reads this setting when the app is loaded).
- ``BUSINESS_EVENTS_STATE_CONTAINER`` (``state``): processing records, ControlNumber marks, retry markers.
- ``BUSINESS_EVENTS_POISON_CONTAINER`` (``events-poison``): one record per event whose handling gave up.
- ``BUSINESS_EVENTS_MAX_BYTES`` (1048576): largest accepted request body; beyond it 413.
- ``BUSINESS_EVENTS_CONTENT_TYPES`` (``application/json,text/json,application/*+json,text/plain``): accepted
  media types; a request without Content-Type is accepted (D365's header is UNCONFIRMED, ref §5.2).
- ``BUSINESS_EVENTS_ALLOWED_EVENT_IDS`` / ``BUSINESS_EVENTS_ALLOWED_LEGAL_ENTITIES`` (empty: all): comma
  lists; legal entities compare case-insensitively. Others are refused with 422.
- ``BUSINESS_EVENTS_REQUIRED_FIELDS`` (empty): payload fields required besides EventId and EventTime,
  e.g. ``BusinessEventId,ControlNumber``.
- ``BUSINESS_EVENTS_SHARED_SECRET`` (secret, optional; a Key Vault reference is fine) and
  ``BUSINESS_EVENTS_SECRET_HEADER`` (``X-Business-Events-Secret``): when the secret is set, every request
  must carry it in that header (401 otherwise), on top of the function key.
- ``BUSINESS_EVENTS_STORE_TIMEOUT_SECONDS`` (5): time budget of the receiver's durable write, so D365
  (10 s timeout) gets a 503 it retries rather than a timeout.
- ``BUSINESS_EVENTS_BLOB_SOURCE`` (``LogsAndContainerScan``; or ``EventGrid``): the processing trigger's
  source, read when the app is loaded (Event Grid needs a subscription on the storage account).
- ``BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS`` (900; 0 turns the sweep off): a stored event with no processing
  record this long after receipt is processed by the retry timer's sweep (``business_event_sweep``), in
  case its blob trigger never fired. Not 0 also makes the receiver tag each raw blob (``received``,
  ``processing=pending``; blob index tags need a storage account without hierarchical namespace).
- ``BUSINESS_EVENTS_SWEEP_BATCH`` (200): most events one sweep run examines (the rest wait for the next run).

Processing (``settings.section(BusinessEventProcessingSettings)``):

- ``BUSINESS_EVENTS_HANDLERS`` (JSON, may be a Key Vault reference): see ``handler_config``.
- ``BUSINESS_EVENTS_MAX_ATTEMPTS`` (5), ``BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS`` (30),
  ``BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS`` (3600): handling attempts before the poison area, and
  the delay before attempt n+1: ``min(max, backoff * 2**(n-1))``.
- ``BUSINESS_EVENTS_ENRICHED_CONTAINER`` (``events-enriched``): default target of the ``enrich`` handler.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from shared.events.handler_config import BUILTIN_OPTIONS, HandlerSpec, parse_handler_config
from shared.settings_reader import Secret, SettingsReader
from shared.trigger_source import blob_trigger_source

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "DEFAULT_RAW_CONTAINER",
    "BusinessEventProcessingSettings",
    "BusinessEventSettings",
    "blob_source_name",
    "raw_container_name",
]

DEFAULT_RAW_CONTAINER = "events"
DEFAULT_CONTENT_TYPES = ("application/json", "text/json", "application/*+json", "text/plain")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+\Z")


def raw_container_name(env: Mapping[str, str] | None = None) -> str:
    """The raw-event container as the blob trigger binding needs it when the app is loaded."""
    value = (os.environ if env is None else env).get("BUSINESS_EVENTS_CONTAINER", "").strip()
    return value or DEFAULT_RAW_CONTAINER


def blob_source_name(env: Mapping[str, str] | None = None) -> str:
    """``EventGrid`` or ``LogsAndContainerScan`` (the default) for the processing trigger."""
    return blob_trigger_source("BUSINESS_EVENTS_BLOB_SOURCE", env)


def _list(reader: SettingsReader, name: str) -> tuple[str, ...]:
    value = reader.text(name) or ""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _sweep_min_age(reader: SettingsReader) -> float:
    value = reader.number("BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS", 900.0, maximum=7 * 86400)
    if 0 < value < 60:  # younger events may still be on their way to the trigger (and to the tag index)
        reader.problem("BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS", "must be 0 (off) or at least 60")
    return value


@dataclass(frozen=True)
class BusinessEventSettings:
    """Receipt and storage; see the module docstring for every setting, its default and meaning."""

    raw_container: str = DEFAULT_RAW_CONTAINER
    state_container: str = "state"
    poison_container: str = "events-poison"
    max_bytes: int = 1024 * 1024
    content_types: tuple[str, ...] = DEFAULT_CONTENT_TYPES
    allowed_event_ids: frozenset[str] | None = None
    allowed_legal_entities: frozenset[str] | None = None  # lower-case
    required_fields: tuple[str, ...] = ()
    secret_header: str = "X-Business-Events-Secret"
    shared_secret: Secret | None = None
    store_timeout_seconds: float = 5.0
    sweep_min_age_seconds: float = 900.0  # 0: no sweep, no tags on the raw blobs
    sweep_batch: int = 200

    @property
    def sweep_enabled(self) -> bool:
        return self.sweep_min_age_seconds > 0

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        header = reader.text("BUSINESS_EVENTS_SECRET_HEADER", default="X-Business-Events-Secret") or ""
        if not _HEADER.match(header):
            reader.problem("BUSINESS_EVENTS_SECRET_HEADER", "is not a valid HTTP header name")
        content_types = tuple(t.lower() for t in _list(reader, "BUSINESS_EVENTS_CONTENT_TYPES"))
        event_ids = _list(reader, "BUSINESS_EVENTS_ALLOWED_EVENT_IDS")
        entities = _list(reader, "BUSINESS_EVENTS_ALLOWED_LEGAL_ENTITIES")
        return cls(
            raw_container=reader.container("BUSINESS_EVENTS_CONTAINER", DEFAULT_RAW_CONTAINER),
            state_container=reader.container("BUSINESS_EVENTS_STATE_CONTAINER", "state"),
            poison_container=reader.container("BUSINESS_EVENTS_POISON_CONTAINER", "events-poison"),
            max_bytes=reader.integer(
                "BUSINESS_EVENTS_MAX_BYTES", 1024 * 1024, minimum=1024, maximum=100 * 1024 * 1024
            ),
            content_types=content_types or DEFAULT_CONTENT_TYPES,
            allowed_event_ids=frozenset(event_ids) or None,
            allowed_legal_entities=frozenset(e.lower() for e in entities) or None,
            required_fields=_list(reader, "BUSINESS_EVENTS_REQUIRED_FIELDS"),
            secret_header=header,
            shared_secret=reader.secret("BUSINESS_EVENTS_SHARED_SECRET"),
            store_timeout_seconds=reader.number(
                "BUSINESS_EVENTS_STORE_TIMEOUT_SECONDS", 5.0, minimum=0.5, maximum=60
            ),
            sweep_min_age_seconds=_sweep_min_age(reader),
            sweep_batch=reader.integer("BUSINESS_EVENTS_SWEEP_BATCH", 200, minimum=1, maximum=5000),
        )


@dataclass(frozen=True)
class BusinessEventProcessingSettings:
    """Processing; see the module docstring for every setting, its default and meaning."""

    handlers: Mapping[str, tuple[HandlerSpec, ...]] = field(default_factory=dict)
    max_attempts: int = 5
    retry_backoff_seconds: float = 30.0
    retry_backoff_max_seconds: float = 3600.0
    enriched_container: str = "events-enriched"

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts."""
        exponent = min(max(attempts - 1, 0), 30)
        return min(self.retry_backoff_max_seconds, self.retry_backoff_seconds * 2.0**exponent)

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        from shared.events.handlers import default_registry, options_problem

        handlers_text = reader.secret("BUSINESS_EVENTS_HANDLERS")
        known = set(BUILTIN_OPTIONS) | default_registry.type_names()
        handlers, problems = parse_handler_config(handlers_text.reveal() if handlers_text else None, known)
        if not problems:  # build the built-in handlers once, so bad options fail at start-up
            problems = [
                problem
                for specs in handlers.values()
                for spec in specs
                if spec.type in BUILTIN_OPTIONS and (problem := options_problem(spec))
            ]
        if problems:
            reader.problem("BUSINESS_EVENTS_HANDLERS", "; ".join(problems))
        backoff = reader.number("BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS", 30.0, maximum=86400)
        backoff_max = reader.number("BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS", 3600.0, maximum=7 * 86400)
        if backoff_max < backoff:
            reader.problem("BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS", "must be >= the backoff")
        return cls(
            handlers=handlers,
            max_attempts=reader.integer("BUSINESS_EVENTS_MAX_ATTEMPTS", 5, minimum=1, maximum=100),
            retry_backoff_seconds=backoff,
            retry_backoff_max_seconds=max(backoff, backoff_max),
            enriched_container=reader.container("BUSINESS_EVENTS_ENRICHED_CONTAINER", "events-enriched"),
        )
