"""Business event payloads: contract field types and values, control numbers, the envelope builder and the
"Download schema" shape (ref §5.1). The events themselves are in catalog.py.

Envelope (ref §5.1, samples in shared/samples/business-events): keys alphabetically sorted; ``EventId`` an
upper-case GUID without braces; ``EventTime`` a WCF date ``/Date(ms)/`` in whole seconds; ``EventTimeIso8601``
with 7 fractional digits; ``ControlNumber`` increasing with gaps; ``InitiatingUserAADObjectId`` a braced
GUID. Two envelope variants, chosen per endpoint:

- ``current``: the whole envelope of recent platform versions (``BusinessEventLegalEntity``,
  ``ContextRecordSubject``, ``EventTimeIso8601``, ``InitiatingUserAADObjectId``,
  ``ParentContextRecordSubjects``);
- ``legacy``: the older one seen in 2019-2021 captures: only ``BusinessEventId``, ``ControlNumber``,
  ``EventId``, ``EventTime``, ``MajorVersion``, ``MinorVersion`` plus the contract fields (``LegalEntity``
  comes from the contract when it has one — the alert sample has none). Custom events of that era could
  override even that: ``NAVAXDMFExportBusinessEvent`` has no ``BusinessEventId``/``ControlNumber`` and a
  braced ``EventId`` (its sample), reproduced in this variant.
"""

from __future__ import annotations

import random
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "EMPTY_WCF_DATE",
    "BusinessEventDefinition",
    "ContractField",
    "EnvelopeVariant",
    "FieldType",
    "PayloadError",
    "build_payload",
    "contract_fields",
    "next_control_number",
    "schema_payload",
    "wcf_date",
]

EMPTY_WCF_DATE = "/Date(-2208988800000)/"  # 1900-01-01, D365's empty date (ref §5.1)
EMPTY_ISO_DATETIME = "1900-01-01T00:00:00Z"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
_WCF_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


class PayloadError(ValueError):
    """A field value or event id a caller gave does not fit the event's contract."""


class EnvelopeVariant(StrEnum):
    CURRENT = "current"
    LEGACY = "legacy"


class FieldType(StrEnum):
    STRING = "string"
    ENUM = "enum"  # published as the symbol string (enum2Symbol, ref §5.1)
    INT = "int"
    INT64 = "int64"
    REAL = "real"
    DATE = "date"  # TransDate: /Date(ms)/ at midnight UTC
    DATETIME = "datetime"  # utcdatetime: /Date(ms)/
    ISO_DATETIME = "iso-datetime"  # an ISO-8601 string (custom contracts do this, see the DMF import sample)


@dataclass(frozen=True)
class ContractField:
    name: str
    type: FieldType
    label: str
    example: Any  # what an on-demand raise fills in when the caller gives no value

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.value, "label": self.label, "example": self.example}


@dataclass(frozen=True)
class BusinessEventDefinition:
    event_id: str  # the contract's class name = BusinessEventId
    name: str
    category: str
    module: str
    description: str
    fields: tuple[ContractField, ...]
    major_version: int = 0
    minor_version: int = 0
    legacy_omits: frozenset[str] = frozenset()  # envelope fields a custom legacy contract left out
    legacy_braced_event_id: bool = False
    note: str = ""  # where the id / fields come from when not a Microsoft source

    def field(self, name: str) -> ContractField | None:
        return next((f for f in self.fields if f.name == name), None)

    def to_json(self) -> dict[str, Any]:
        answer = {
            "BusinessEventId": self.event_id,
            "Name": self.name,
            "Category": self.category,
            "Module": self.module,
            "Description": self.description,
            "MajorVersion": self.major_version,
            "MinorVersion": self.minor_version,
            "Fields": [f.to_json() for f in self.fields],
            "Schema": schema_payload(self),
        }
        if self.note:
            answer["Note"] = self.note
        return answer


# -- values ---------------------------------------------------------------------------------------------


def wcf_date(moment: datetime) -> str:
    """``/Date(<ms since epoch>)/`` (DataContractJsonSerializer's date form)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"/Date({int(moment.timestamp() * 1000)})/"


def _parse_moment(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        match = _WCF_DATE.match(value)
        if match:
            return datetime.fromtimestamp(int(match.group(1)) / 1000, UTC)
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    raise PayloadError(
        f"field '{name}' needs a date: ISO-8601 text, /Date(ms)/ or milliseconds since 1970, not {value!r}"
    )


def contract_value(field: ContractField, value: Any) -> Any:
    """A caller's value in the wire form of the field type."""
    name, kind = field.name, field.type
    if kind in (FieldType.STRING, FieldType.ENUM):
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise PayloadError(f"field '{name}' needs a string, not {value!r}")
    if kind in (FieldType.INT, FieldType.INT64):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise PayloadError(f"field '{name}' needs an integer, not {value!r}")
    if kind == FieldType.REAL:
        if isinstance(value, bool):
            raise PayloadError(f"field '{name}' needs a number, not {value!r}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise PayloadError(f"field '{name}' needs a number, not {value!r}") from None
        return int(number) if number.is_integer() else number  # decimals go out as 0, 100, 90055.6
    moment = _parse_moment(value, name)
    if kind == FieldType.DATE:
        return wcf_date(datetime(moment.year, moment.month, moment.day, tzinfo=UTC))
    if kind == FieldType.DATETIME:
        return wcf_date(moment.replace(microsecond=0))
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _empty_value(field: ContractField) -> Any:
    """What the catalog's Download schema shows for a field (ref §5.1: empty date = 1900-01-01)."""
    return {
        FieldType.STRING: "",
        FieldType.ENUM: "",
        FieldType.INT: 0,
        FieldType.INT64: 0,
        FieldType.REAL: 0,
        FieldType.DATE: EMPTY_WCF_DATE,
        FieldType.DATETIME: EMPTY_WCF_DATE,
        FieldType.ISO_DATETIME: EMPTY_ISO_DATETIME,
    }[field.type]


# -- control numbers --------------------------------------------------------------------------------------


class _ControlNumbers:
    """Process-wide, increasing, with gaps (ref §5.1: "cannot be sequential. There can be gaps"). It starts in
    the RecId range the samples show and never goes back, not even on an admin reset, so a receiver that
    remembers the last number it saw stays right across resets."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random()
        self._last = 5637144576 + self._random.randrange(1000, 50_000)

    def next(self) -> int:
        with self._lock:
            gap = 1 if self._random.random() < 0.6 else self._random.randrange(2, 40)
            self._last += gap
            return self._last


_CONTROL_NUMBERS = _ControlNumbers()


def next_control_number() -> int:
    return _CONTROL_NUMBERS.next()


# -- payloads ---------------------------------------------------------------------------------------------


def iso8601_7(now_ns: int) -> str:
    """``2022-12-30T13:51:15.2942742Z``: seconds plus 7 digits of 100-ns ticks (.NET's precision)."""
    seconds, rest = divmod(now_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 100:07d}Z"


def build_payload(
    definition: BusinessEventDefinition,
    *,
    legal_entity: str,
    fields: Mapping[str, Any],
    control_number: int,
    event_id: uuid.UUID,
    event_time_ns: int,
    initiating_user: uuid.UUID,
    variant: EnvelopeVariant = EnvelopeVariant.CURRENT,
) -> dict[str, Any]:
    """The JSON object D365 posts, keys sorted. ``fields`` must be complete, in wire form
    (``contract_fields`` makes them); ``event_time_ns`` is ``time.time_ns()`` of the raise."""
    whole_ms = event_time_ns // 1_000_000_000 * 1000  # EventTime carries whole seconds in every capture
    payload: dict[str, Any] = {
        "BusinessEventId": definition.event_id,
        "ControlNumber": control_number,
        "EventId": str(event_id).upper(),
        "EventTime": f"/Date({whole_ms})/",
        "MajorVersion": definition.major_version,
        "MinorVersion": definition.minor_version,
    }
    if variant is EnvelopeVariant.CURRENT:
        payload.update(
            {
                "BusinessEventLegalEntity": legal_entity,
                "ContextRecordSubject": "",
                "EventTimeIso8601": iso8601_7(event_time_ns),
                "InitiatingUserAADObjectId": "{" + str(initiating_user).upper() + "}",
                "ParentContextRecordSubjects": [],
            }
        )
    else:
        for name in definition.legacy_omits:
            payload.pop(name, None)
        if definition.legacy_braced_event_id:
            payload["EventId"] = "{" + payload["EventId"] + "}"
    payload.update(fields)
    return dict(sorted(payload.items()))


def contract_fields(
    definition: BusinessEventDefinition, given: Mapping[str, Any], *, legal_entity: str
) -> dict[str, Any]:
    """The contract part of a payload: the caller's values (checked and converted), the rest from the
    field examples; ``LegalEntity`` defaults to the event's legal entity."""
    unknown = sorted(set(given) - {f.name for f in definition.fields})
    if unknown:
        names = ", ".join(f.name for f in definition.fields)
        raise PayloadError(
            f"{definition.event_id} has no field {', '.join(unknown)}; its contract fields are: {names}"
        )
    values: dict[str, Any] = {}
    for field in definition.fields:
        if field.name in given:
            raw = given[field.name]
        elif field.name == "LegalEntity":
            raw = legal_entity
        else:
            raw = field.example
        values[field.name] = contract_value(field, raw)
    return values


def schema_payload(definition: BusinessEventDefinition) -> dict[str, Any]:
    """What "Download schema" gives: the current envelope with empty values (the batch-job schema sample of
    ref §5.1 [S33]: ``BusinessEventId`` "", dates 1900-01-01, a zero braced GUID,
    ``ParentContextRecordSubjects`` null)."""
    payload: dict[str, Any] = {
        "BusinessEventId": "",
        "BusinessEventLegalEntity": "",
        "ContextRecordSubject": "",
        "ControlNumber": 0,
        "EventId": "",
        "EventTime": EMPTY_WCF_DATE,
        "EventTimeIso8601": EMPTY_ISO_DATETIME,
        "InitiatingUserAADObjectId": "{" + EMPTY_GUID + "}",
        "MajorVersion": definition.major_version,
        "MinorVersion": definition.minor_version,
        "ParentContextRecordSubjects": None,
    }
    payload.update({f.name: _empty_value(f) for f in definition.fields})
    return dict(sorted(payload.items()))
