"""Request bodies: one event, arrays with exact per-event bytes, Event Grid (string / object data,
validation handshake) and CloudEvents deliveries, and bodies that are not JSON."""

from __future__ import annotations

import base64
import json

import pytest

from shared.events.body import BodyError, read_body
from shared.events.eventgrid import VALIDATION_EVENT_TYPE
from shared.events.model import EventSource

EVENT = {"BusinessEventId": "X", "EventId": "A1", "EventTime": "/Date(1637246655000)/", "ControlNumber": 7}
EVENT_TEXT = json.dumps(EVENT, separators=(",", ":"))


def test_a_single_event_keeps_the_body_bytes_exactly() -> None:
    body = ("\ufeff" + json.dumps(EVENT, indent=4)).encode("utf-8")
    parsed = read_body(body)
    assert not parsed.batch
    assert [i.fields for i in parsed.items] == [EVENT]
    assert parsed.items[0].original == body
    assert parsed.items[0].source is EventSource.NATIVE


def test_an_array_keeps_each_events_own_bytes() -> None:
    first = '{ "EventId" : "A1",\n  "EventTime": "\\/Date(1)\\/" }'
    second = '{"EventId":"A2","EventTime":"/Date(2)/","Name":"caf\u00e9"}'
    body = f"  [ {first} ,\n{second}]\n".encode()
    parsed = read_body(body)
    assert parsed.batch
    assert [i.original for i in parsed.items] == [first.encode(), second.encode()]
    assert parsed.items[0].fields == {"EventId": "A1", "EventTime": "/Date(1)/"}
    assert [i.index for i in parsed.items] == [0, 1]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", "empty_body"),
        (b"  \n", "empty_body"),
        (b"{not json", "invalid_json"),
        (b'{"EventId": "A"} trailing', "invalid_json"),
        (b"[{}, {]", "invalid_json"),
        (b"[{} {}]", "invalid_json"),
        (b"[{}] x", "invalid_json"),
        (b"[]", "empty_batch"),
        ("{}".encode("utf-16"), "invalid_json"),
        (b"[" * 100000, "invalid_json"),
    ],
)
def test_bodies_that_are_not_json_events(body: bytes, code: str) -> None:
    with pytest.raises(BodyError) as caught:
        read_body(body)
    assert caught.value.code == code


def grid_event(data: object, event_type: str = "SalesInvoicePostedBusinessEvent") -> dict[str, object]:
    return {
        "id": "b6a6b2a1-0000-4000-8000-000000000001",
        "topic": "/subscriptions/s/resourceGroups/g/providers/Microsoft.EventGrid/topics/d365",
        "subject": "SalesInvoicePostedBusinessEvent/usmf",
        "eventType": event_type,
        "eventTime": "2022-12-30T13:51:15Z",
        "dataVersion": "1.0",
        "data": data,
    }


def test_event_grid_with_the_payload_as_a_json_string_keeps_d365s_bytes() -> None:
    body = json.dumps([grid_event(EVENT_TEXT), grid_event(EVENT_TEXT.replace("A1", "A2"))]).encode()
    parsed = read_body(body)
    assert len(parsed.items) == 2
    item = parsed.items[0]
    assert (item.source, item.exact_original, item.fields) == (EventSource.EVENT_GRID, True, EVENT)
    assert item.original == EVENT_TEXT.encode()
    assert item.envelope["subject"] == "SalesInvoicePostedBusinessEvent/usmf"
    assert item.envelope["topic"].startswith("/subscriptions/")


def test_event_grid_with_the_payload_as_an_object_is_reencoded() -> None:
    parsed = read_body(json.dumps([grid_event(EVENT)]).encode())
    item = parsed.items[0]
    assert (item.fields, item.exact_original) == (EVENT, False)
    assert json.loads(item.original) == EVENT


def test_event_grid_data_that_is_not_an_event_is_an_item_error() -> None:
    parsed = read_body(
        json.dumps([grid_event("not json"), grid_event(None), grid_event(EVENT_TEXT)]).encode()
    )
    assert [i.error.code if i.error else None for i in parsed.items] == ["invalid_json", "not_an_event", None]


def test_subscription_validation_handshake() -> None:
    validation = grid_event({"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}, VALIDATION_EVENT_TYPE)
    parsed = read_body(json.dumps([validation]).encode())
    assert parsed.validation_code == "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
    assert parsed.items == []
    # a validation event mixed into a batch is not a handshake: it is an item like any other
    mixed = read_body(json.dumps([validation, grid_event(EVENT_TEXT)]).encode())
    assert mixed.validation_code is None
    assert len(mixed.items) == 2


def test_cloud_events_with_data_or_data_base64() -> None:
    plain = {"specversion": "1.0", "type": "X", "source": "/d365", "id": "c1", "data": EVENT}
    encoded = {
        "specversion": "1.0",
        "type": "X",
        "source": "/d365",
        "id": "c2",
        "data_base64": base64.b64encode(EVENT_TEXT.encode()).decode(),
    }
    parsed = read_body(json.dumps([plain, encoded]).encode())
    assert [i.source for i in parsed.items] == [EventSource.CLOUD_EVENTS] * 2
    assert parsed.items[1].original == EVENT_TEXT.encode()
    assert parsed.items[1].exact_original
    assert parsed.items[0].envelope == {"id": "c1", "source": "/d365", "type": "X"}
