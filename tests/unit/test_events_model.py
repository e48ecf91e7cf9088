"""The business-event model on the published payload variants: envelopes, dates, ids, normalisation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shared.events.layout import control_number_path, raw_path
from shared.events.model import (
    NO_BUSINESS_EVENT_ID,
    NO_LEGAL_ENTITY,
    EventFormatError,
    EventSource,
    iso,
    normalise_event_id,
    parse_date,
    parse_event,
    parse_wcf_date,
)

# ref §5.1 example 2: an older envelope (LegalEntity, no BusinessEventLegalEntity / EventTimeIso8601)
PURCHASE_ORDER = (
    b'{"BusinessEventId":"PurchaseOrderConfirmedBusinessEvent","ControlNumber":5637144576,'
    b'"EventId":"55A81094-A14E-46A6-A12C-07ED5C5990C6","EventTime":"/Date(1637246655000)/",'
    b'"LegalEntity":"brmf","MajorVersion":0,"MinorVersion":0,"PurchaseJournal":"BRMF-000018-2",'
    b'"PurchaseOrderDate":"/Date(1637193600000)/","PurchaseOrderNumber":"BRMF-000018",'
    b'"PurchaseType":"Purch","TransactionCurrencyAmount":90055.6,"TransactionCurrencyCode":"BRL",'
    b'"VendorAccount":"BRMF-000004"}'
)
# the newer envelope (ref §5.1 table)
INVOICE = {
    "BusinessEventId": "SalesInvoicePostedBusinessEvent",
    "BusinessEventLegalEntity": "USMF",
    "ContextRecordSubject": "",
    "ControlNumber": 5637611083,
    "EventId": "3C47A4CD-6EDC-4319-B893-3F862EED65FD",
    "EventTime": "/Date(1672408275000)/",
    "EventTimeIso8601": "2022-12-30T13:51:15.2942742Z",
    "InitiatingUserAADObjectId": "{410A2690-5EC2-42EE-9F2A-E75B4E324930}",
    "InvoiceId": "CIV-000123",
    "InvoiceDate": "/Date(1672358400000)/",
    "MajorVersion": 0,
    "MinorVersion": 0,
    "ParentContextRecordSubjects": [],
}


def sample(samples_dir: Path, name: str) -> bytes:
    return (samples_dir / "business-events" / name).read_bytes()


def test_wcf_and_iso_dates_become_aware_utc() -> None:
    assert parse_wcf_date("/Date(1672408275000)/") == datetime(2022, 12, 30, 13, 51, 15, tzinfo=UTC)
    assert parse_wcf_date("/Date(1672408275000+0100)/") == datetime(2022, 12, 30, 13, 51, 15, tzinfo=UTC)
    assert parse_wcf_date("/Date(-2208988800000)/") == datetime(1900, 1, 1, tzinfo=UTC)
    assert parse_wcf_date("Date(1)") is None
    assert parse_date("2022-12-30T13:51:15.2942742Z") == datetime(
        2022, 12, 30, 13, 51, 15, 294274, tzinfo=UTC
    )
    assert parse_date("2020-05-29T07:55:30") == datetime(2020, 5, 29, 7, 55, 30, tzinfo=UTC)
    assert parse_date("2020-05-29T09:55:30+02:00") == datetime(2020, 5, 29, 7, 55, 30, tzinfo=UTC)
    for value in ("", "soon", None, 12, "BRMF-000018"):
        assert parse_date(value) is None


def test_event_ids_are_unbraced_upper_case() -> None:
    assert (
        normalise_event_id("{6070e2a4-a3d8-4074-b105-4f2666cca04c}") == "6070E2A4-A3D8-4074-B105-4F2666CCA04C"
    )
    assert normalise_event_id("custom-id_1") == "custom-id_1"
    for bad in ("", "  ", "../x", "a/b", 12, None):
        with pytest.raises(EventFormatError):
            normalise_event_id(bad)


def test_old_envelope_with_legal_entity_and_no_iso_time() -> None:
    event = parse_event(json.loads(PURCHASE_ORDER), PURCHASE_ORDER)
    assert (event.business_event_id, event.legal_entity, event.control_number) == (
        "PurchaseOrderConfirmedBusinessEvent",
        "brmf",
        5637144576,
    )
    assert event.event_time == datetime(2021, 11, 18, 14, 44, 15, tzinfo=UTC)
    assert event.original == PURCHASE_ORDER
    assert (event.major_version, event.minor_version) == (0, 0)
    normalised = event.normalised_fields()
    assert normalised["PurchaseOrderDate"] == "2021-11-18T00:00:00Z"
    assert normalised["TransactionCurrencyAmount"] == 90055.6
    assert raw_path(event) == (
        "PurchaseOrderConfirmedBusinessEvent/brmf/2021/11/18/55A81094-A14E-46A6-A12C-07ED5C5990C6.json"
    )


def test_new_envelope_prefers_the_precise_iso_time_and_business_event_legal_entity() -> None:
    event = parse_event({**INVOICE, "LegalEntity": "other"}, b"{}")
    assert event.event_time == datetime(2022, 12, 30, 13, 51, 15, 294274, tzinfo=UTC)
    assert event.legal_entity == "USMF"
    assert event.legal_entity_key == "usmf"  # dataAreaId is case-insensitive: one path and one mark
    assert control_number_path(event) == "control-numbers/SalesInvoicePostedBusinessEvent/usmf.json"
    document = event.document()
    assert document["eventTime"] == "2022-12-30T13:51:15.294274Z"
    assert document["fields"]["InvoiceDate"] == "2022-12-30T00:00:00Z"
    assert document["fields"]["InitiatingUserAADObjectId"] == "{410A2690-5EC2-42EE-9F2A-E75B4E324930}"
    assert document["source"] == "native"


def test_alert_sample_without_legal_entity(samples_dir: Path) -> None:
    body = sample(samples_dir, "BusinessEventsAlertEvent.json")
    event = parse_event(json.loads(body), body)
    assert event.business_event_id == "BusinessEventsAlertEvent"
    assert event.legal_entity is None
    assert event.legal_entity_key == NO_LEGAL_ENTITY
    assert event.control_number == 5637145330
    assert iso(event.event_time) == "2019-10-11T04:54:41Z"
    assert raw_path(event).startswith(f"BusinessEventsAlertEvent/{NO_LEGAL_ENTITY}/2019/10/11/D60A8657")


def test_custom_sample_without_business_event_id_or_control_number(samples_dir: Path) -> None:
    body = sample(samples_dir, "NAVAXDMFExportBusinessEvent.json")
    event = parse_event(json.loads(body), body)
    assert event.event_id == "6070E2A4-A3D8-4074-B105-4F2666CCA04C"  # was braced
    assert event.business_event_id is None
    assert event.event_key == NO_BUSINESS_EVENT_ID
    assert event.control_number is None
    assert event.legal_entity == "usmf"
    assert event.original == body  # pretty-printed bytes kept as they came


def test_sample_mixing_wcf_and_iso_dates(samples_dir: Path) -> None:
    body = sample(samples_dir, "NAVAXDMFImportStatusBusinessEvent.json")
    event = parse_event(json.loads(body), body)
    fields = event.normalised_fields()
    assert fields["EventTime"] == "2020-05-29T07:55:30Z"
    assert fields["EndDateTime"] == "2020-05-29T07:55:30Z"  # ISO kept as sent
    assert fields["Status"] == "Partially succeeded"


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        ([1, 2], "not_an_event", "JSON object"),
        ({"EventTime": "/Date(1)/"}, "missing_fields", "EventId"),
        ({}, "missing_fields", "EventId, EventTime"),
        ({"EventId": "A"}, "missing_fields", "EventTime"),
        ({"EventId": "A", "EventTime": "yesterday"}, "invalid_field", "EventTime"),
        ({"EventId": "A", "EventTime": "/Date(1)/", "ControlNumber": "x1"}, "invalid_field", "ControlNumber"),
        ({"EventId": "A", "EventTime": "/Date(1)/", "ControlNumber": True}, "invalid_field", "ControlNumber"),
        (
            {"EventId": "A", "EventTime": "/Date(1)/", "BusinessEventId": "a/../b"},
            "invalid_field",
            "BusinessEventId",
        ),
        (
            {"EventId": "A", "EventTime": "/Date(1)/", "BusinessEventLegalEntity": "u s"},
            "invalid_field",
            "Legal",
        ),
    ],
)
def test_unusable_payloads_say_why(fields: object, code: str, words: str) -> None:
    with pytest.raises(EventFormatError) as caught:
        parse_event(fields, b"")
    assert caught.value.code == code
    assert words in caught.value.message


def test_tolerant_reading_of_numbers_and_a_contract_legal_entity_field() -> None:
    event = parse_event(
        {"EventId": "A", "EventTime": "/Date(0)/", "ControlNumber": "42", "LegalEntity": "Contoso Ltd"},
        b"",
        source=EventSource.EVENT_GRID,
    )
    assert event.control_number == 42
    assert event.legal_entity is None  # not a dataAreaId: ignored rather than refused
    assert event.template_values()["yyyy"] == "1970"
