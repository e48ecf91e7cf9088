"""The business-event model: one typed ``BusinessEvent`` for every envelope variant D365 has sent.

Envelopes differ by platform version and by event (ref §5.1 and the published samples): older ones have no
``BusinessEventLegalEntity`` / ``EventTimeIso8601`` (some carry ``LegalEntity`` instead), some custom events
have no ``BusinessEventId`` or ``ControlNumber``, ``EventId`` may be braced, and dates come as WCF
``/Date(ms)/`` strings or ISO-8601 in the same payload. Parsing keeps the fields as sent and the original
bytes; the normalised view (aware UTC datetimes, unbraced upper-case GUIDs) is derived from them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

__all__ = [
    "NO_BUSINESS_EVENT_ID",
    "NO_LEGAL_ENTITY",
    "BusinessEvent",
    "EventFormatError",
    "EventSource",
    "iso",
    "normalise_event_id",
    "parse_date",
    "parse_event",
    "parse_wcf_date",
]

#: Path and key segment used for events that do not name their business event (custom events exist).
NO_BUSINESS_EVENT_ID = "_unidentified"
#: ... and for events that carry no legal entity (alerts, system events).
NO_LEGAL_ENTITY = "_none"

_WCF_DATE = re.compile(r"/Date\((-?\d{1,15})([+-]\d{4})?\)/\Z")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\Z")
# What may become one blob path segment: no separators, no dot-only names, nothing needing escapes.
_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}\Z")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class EventSource(StrEnum):
    """How the event reached the receiver."""

    NATIVE = "native"  # D365's HTTPS endpoint: the payload is the request body (or one item of an array)
    EVENT_GRID = "eventgrid"  # Event Grid schema: the payload is in ``data`` (a JSON string or an object)
    CLOUD_EVENTS = "cloudevents"  # CloudEvents 1.0 delivery of an Event Grid subscription


class EventFormatError(ValueError):
    """The payload is not a usable business event; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse_wcf_date(text: str) -> datetime | None:
    """``/Date(1672408275000)/`` (ms since the epoch, UTC) → aware UTC datetime; None if not that form.

    A ``+hhmm`` suffix (WCF's local-time flavour) only says which zone the sender displayed: the number is
    UTC milliseconds either way, so it is ignored.
    """
    match = _WCF_DATE.match(text)
    if match is None:
        return None
    return _EPOCH + timedelta(milliseconds=int(match.group(1)))


def parse_date(value: object) -> datetime | None:
    """A WCF or ISO-8601 date string → aware UTC datetime (naive ISO is taken as UTC); None otherwise."""
    if not isinstance(value, str) or not value:
        return None
    wcf = parse_wcf_date(value)
    if wcf is not None:
        return wcf
    if not value[:1].isdigit():
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11 accepts "Z" and truncates 7 fractional digits
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with a ``Z`` (microseconds only when present)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def normalise_event_id(value: object) -> str:
    """``{6070e2a4-...}`` → ``6070E2A4-...``; other safe tokens are kept as sent. Raises EventFormatError."""
    if not isinstance(value, str) or not value.strip():
        raise EventFormatError("invalid_field", "EventId must be a non-empty string")
    text = value.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if _GUID.match(text):
        return text.upper()
    if _TOKEN.match(text):
        return text
    raise EventFormatError("invalid_field", "EventId must be a GUID (braces allowed) or a plain token")


def _token(fields: Mapping[str, Any], name: str, *, strict: bool = True) -> str | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _TOKEN.match(value.strip()):
        if not strict:
            return None
        raise EventFormatError(
            "invalid_field", f"{name} must be a plain identifier (letters, digits, '_', '-', '.')"
        )
    return value.strip()


def _integer(fields: Mapping[str, Any], name: str, *, strict: bool) -> int | None:
    value = fields.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        number = int(value.strip())
    else:
        number = None
    if number is None and strict:
        raise EventFormatError("invalid_field", f"{name} must be an integer")
    return number


def _event_time(fields: Mapping[str, Any]) -> datetime:
    # EventTimeIso8601 (newer platforms) has sub-millisecond precision; EventTime is in every variant.
    for name in ("EventTimeIso8601", "EventTime"):
        moment = parse_date(fields.get(name))
        if moment is not None:
            return moment
    if fields.get("EventTime") is None and fields.get("EventTimeIso8601") is None:
        raise EventFormatError("missing_fields", "missing required field EventTime")
    raise EventFormatError("invalid_field", "EventTime must be a /Date(ms)/ or ISO-8601 date")


@dataclass(frozen=True)
class BusinessEvent:
    """One business event: the normalised envelope, the fields as sent, and the bytes to archive."""

    event_id: str
    business_event_id: str | None
    legal_entity: str | None
    control_number: int | None
    event_time: datetime
    fields: Mapping[str, Any]
    original: bytes
    source: EventSource = EventSource.NATIVE
    exact_original: bool = True  # False when the payload had to be re-serialised (Event Grid object data)
    envelope: Mapping[str, str] = field(default_factory=dict)  # Event Grid / CloudEvents id, subject, ...

    @property
    def major_version(self) -> int | None:
        return _integer(self.fields, "MajorVersion", strict=False)

    @property
    def minor_version(self) -> int | None:
        return _integer(self.fields, "MinorVersion", strict=False)

    @property
    def event_key(self) -> str:
        """The business event id as a path/key segment."""
        return self.business_event_id or NO_BUSINESS_EVENT_ID

    @property
    def legal_entity_key(self) -> str:
        """The legal entity as a path/key segment: lower-case (dataAreaId is case-insensitive in D365)."""
        return self.legal_entity.lower() if self.legal_entity else NO_LEGAL_ENTITY

    def normalised_fields(self) -> dict[str, Any]:
        """The fields with every ``/Date(ms)/`` value as an ISO-8601 UTC string (nested values too).

        D365's empty date (1900-01-01, ref §5.1) is kept as that date: it is what D365 sent.
        """
        return {name: _normalise_value(value) for name, value in self.fields.items()}

    def document(self) -> dict[str, Any]:
        """The normalised event as JSON-ready data (what handlers forward or embed)."""
        return {
            "eventId": self.event_id,
            "businessEventId": self.business_event_id,
            "legalEntity": self.legal_entity,
            "controlNumber": self.control_number,
            "eventTime": iso(self.event_time),
            "majorVersion": self.major_version,
            "minorVersion": self.minor_version,
            "source": str(self.source),
            "envelope": dict(self.envelope),
            "fields": self.normalised_fields(),
        }

    def template_values(self) -> dict[str, Any]:
        """Values for handler templates: every field by its name, plus the normalised envelope."""
        values: dict[str, Any] = dict(self.fields)
        values.update(
            event_id=self.event_id,
            business_event_id=self.event_key,
            legal_entity=self.legal_entity_key,
            control_number=self.control_number,
            yyyy=f"{self.event_time.year:04d}",
            mm=f"{self.event_time.month:02d}",
            dd=f"{self.event_time.day:02d}",
        )
        return values


def _normalise_value(value: Any) -> Any:
    if isinstance(value, str):
        moment = parse_wcf_date(value)
        return iso(moment) if moment is not None else value
    if isinstance(value, list):
        return [_normalise_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise_value(item) for key, item in value.items()}
    return value


def parse_event(
    fields: object,
    original: bytes,
    *,
    source: EventSource = EventSource.NATIVE,
    exact_original: bool = True,
    envelope: Mapping[str, str] | None = None,
) -> BusinessEvent:
    """Read one D365 payload (the decoded JSON object); raise EventFormatError when it is not an event.

    Required: ``EventId`` and a time (``EventTime`` or ``EventTimeIso8601``), which every published variant
    has. ``BusinessEventId``, ``ControlNumber`` and the legal entity are optional here (some real events
    lack them); deployments can require them with ``BUSINESS_EVENTS_REQUIRED_FIELDS``.
    """
    if not isinstance(fields, dict):
        raise EventFormatError("not_an_event", "a business event must be a JSON object")
    if fields.get("EventId") in (None, ""):
        missing = ["EventId"] + (
            ["EventTime"]
            if fields.get("EventTime") is None and fields.get("EventTimeIso8601") is None
            else []
        )
        raise EventFormatError("missing_fields", "missing required field(s) " + ", ".join(missing))
    event_id = normalise_event_id(fields["EventId"])
    event_time = _event_time(fields)
    # Newer platforms send BusinessEventLegalEntity; older ones (and many contracts) only LegalEntity.
    # A contract's own LegalEntity field is only a fallback, so an odd value there is not an error.
    legal_entity = _token(fields, "BusinessEventLegalEntity") or _token(fields, "LegalEntity", strict=False)
    return BusinessEvent(
        event_id=event_id,
        business_event_id=_token(fields, "BusinessEventId"),
        legal_entity=legal_entity,
        control_number=_integer(fields, "ControlNumber", strict=True),
        event_time=event_time,
        fields=fields,
        original=original,
        source=source,
        exact_original=exact_original,
        envelope=dict(envelope or {}),
    )
