"""Azure Event Grid deliveries: the subscription validation handshake and unwrapping D365's payload.

D365 publishes to an Event Grid topic with its payload in ``data`` **as a JSON string** by default, or as an
object with "Send object in Event Grid data field" (ref §5.2). A webhook subscription first sends a
``Microsoft.EventGrid.SubscriptionValidationEvent``; answering ``{"validationResponse": <code>}`` proves we
own the endpoint. A subscription may also deliver in the CloudEvents 1.0 schema (``specversion``, ``data`` or
``data_base64``). Exact ``eventType`` / ``subject`` values D365 uses are UNCONFIRMED (ref §5.2), so they are
only recorded, never required.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from shared.events.model import EventFormatError, EventSource

__all__ = [
    "VALIDATION_EVENT_TYPE",
    "Item",
    "is_cloud_event",
    "is_event_grid_event",
    "unwrap",
    "validation_code",
]

VALIDATION_EVENT_TYPE = "Microsoft.EventGrid.SubscriptionValidationEvent"

_EVENT_GRID_FIELDS = ("id", "topic", "subject", "eventType", "eventTime", "dataVersion")
_CLOUD_EVENT_FIELDS = ("id", "source", "type", "subject", "time")


@dataclass(frozen=True)
class Item:
    """One event of a request: the D365 payload (decoded) and its bytes, or why it cannot be read."""

    index: int
    fields: object
    original: bytes
    source: EventSource = EventSource.NATIVE
    exact_original: bool = True
    envelope: Mapping[str, str] = field(default_factory=dict)
    error: EventFormatError | None = None


def is_event_grid_event(value: object) -> bool:
    """Event Grid schema: ``id``, ``eventType`` and ``data`` (D365's own payloads are PascalCase)."""
    return isinstance(value, dict) and isinstance(value.get("eventType"), str) and "id" in value


def is_cloud_event(value: object) -> bool:
    return isinstance(value, dict) and "specversion" in value and isinstance(value.get("type"), str)


def validation_code(value: object) -> str | None:
    """The code of a subscription validation event, else None."""
    if not is_event_grid_event(value):
        return None
    assert isinstance(value, dict)
    if value.get("eventType") != VALIDATION_EVENT_TYPE:
        return None
    data = value.get("data")
    code = data.get("validationCode") if isinstance(data, dict) else None
    return code if isinstance(code, str) and code else None


def _envelope(value: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, str]:
    """The delivery facts worth keeping, as ASCII-safe strings (they end up in blob metadata)."""
    kept = {}
    for name in names:
        item = value.get(name)
        if isinstance(item, str | int) and not isinstance(item, bool) and str(item):
            kept[name] = quote(str(item)[:512], safe="/:._-@+=,;")
    return kept


def _decode_data(data: object, index: int, source: EventSource, envelope: dict[str, str]) -> Item:
    if isinstance(data, str):
        # The default: D365's payload as a JSON string; its UTF-8 bytes are exactly what D365 produced.
        try:
            fields = json.loads(data)
        except ValueError:
            error = EventFormatError("invalid_json", "the Event Grid data string is not JSON")
            return Item(index, None, data.encode("utf-8"), source, True, envelope, error)
        return Item(index, fields, data.encode("utf-8"), source, True, envelope)
    if isinstance(data, dict):
        # "Send object in Event Grid data field": the bytes D365 sent are not recoverable, only re-encoded.
        original = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        return Item(index, data, original, source, False, envelope)
    error = EventFormatError("not_an_event", "the Event Grid event has no D365 payload in data")
    return Item(index, None, b"", source, True, envelope, error)


def unwrap(index: int, value: object, original: bytes) -> Item:
    """One element of a request body → the D365 payload it carries (native, Event Grid or CloudEvents)."""
    if is_event_grid_event(value):
        assert isinstance(value, dict)
        return _decode_data(
            value.get("data"), index, EventSource.EVENT_GRID, _envelope(value, _EVENT_GRID_FIELDS)
        )
    if is_cloud_event(value):
        assert isinstance(value, dict)
        envelope = _envelope(value, _CLOUD_EVENT_FIELDS)
        if "data_base64" in value:
            try:
                raw = base64.b64decode(str(value["data_base64"]), validate=True)
                fields = json.loads(raw)
            except (binascii.Error, ValueError):
                error = EventFormatError("invalid_json", "the CloudEvents data_base64 is not base64 JSON")
                return Item(index, None, b"", EventSource.CLOUD_EVENTS, True, envelope, error)
            return Item(index, fields, raw, EventSource.CLOUD_EVENTS, True, envelope)
        return _decode_data(value.get("data"), index, EventSource.CLOUD_EVENTS, envelope)
    return Item(index, value, original)
