"""The business event catalog and payload builder against the real payloads in shared/samples/business-events
and the captured shapes of ref §5.1 (key sets, key order, value formats)."""

from __future__ import annotations

import itertools
import json
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emulator.business_events.catalog import CATALOG, event_definition
from emulator.business_events.model import (
    BusinessEventsModel,
    ConfigError,
    DeliveryFaults,
    DeliverySettings,
    Endpoint,
)
from emulator.business_events.payloads import (
    EnvelopeVariant,
    PayloadError,
    build_payload,
    contract_fields,
    iso8601_7,
    next_control_number,
    schema_payload,
)

GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
BRACED_GUID = re.compile(r"^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$")
WCF_DATE = re.compile(r"^/Date\(-?\d+\)/$")
ISO_7 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
CURRENT_ENVELOPE = {
    "BusinessEventId",
    "BusinessEventLegalEntity",
    "ContextRecordSubject",
    "ControlNumber",
    "EventId",
    "EventTime",
    "EventTimeIso8601",
    "InitiatingUserAADObjectId",
    "MajorVersion",
    "MinorVersion",
    "ParentContextRecordSubjects",
}
# The captured PurchaseOrderConfirmedBusinessEvent of ref §5.1 example 2 (an older platform version).
CAPTURED_PO_CONFIRMED = (
    '{"BusinessEventId":"PurchaseOrderConfirmedBusinessEvent","ControlNumber":5637144576,'
    '"EventId":"55A81094-A14E-46A6-A12C-07ED5C5990C6","EventTime":"/Date(1637246655000)/",'
    '"LegalEntity":"brmf","MajorVersion":0,"MinorVersion":0,"PurchaseJournal":"BRMF-000018-2",'
    '"PurchaseOrderDate":"/Date(1637193600000)/","PurchaseOrderNumber":"BRMF-000018",'
    '"PurchaseType":"Purch","TransactionCurrencyAmount":90055.6,"TransactionCurrencyCode":"BRL",'
    '"VendorAccount":"BRMF-000004"}'
)
# "Download schema" of the batch job started event (ref §5.1 example 3, [S33]), verbatim.
DOWNLOADED_BATCH_SCHEMA = (
    '{"AdminEmailId":"","BusinessEventId":"","BusinessEventLegalEntity":"","ContextRecordSubject":"",'
    '"ControlNumber":0,"EventId":"","EventTime":"/Date(-2208988800000)/",'
    '"EventTimeIso8601":"1900-01-01T00:00:00Z","InitiatingUserAADObjectId":'
    '"{00000000-0000-0000-0000-000000000000}","JobDescription":"","JobEndUtcDateTime":'
    '"/Date(-2208988800000)/","JobExecutedByEmailId":"","JobId":0,"JobOwnerEmailId":"","JobStatus":"",'
    '"MajorVersion":0,"MinorVersion":0,"ParentContextRecordSubjects":null}'
)
ENVELOPE_FIELDS = CURRENT_ENVELOPE | {"LegalEntity"}


def make(
    event: str, fields: dict[str, Any], variant: EnvelopeVariant, legal_entity: str = "usmf"
) -> dict[str, Any]:
    definition = event_definition(event)
    return build_payload(
        definition,
        legal_entity=legal_entity,
        fields=contract_fields(definition, fields, legal_entity=legal_entity),
        control_number=next_control_number(),
        event_id=uuid.uuid4(),
        event_time_ns=time.time_ns(),
        initiating_user=uuid.uuid4(),
        variant=variant,
    )


def sample(samples_dir: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((samples_dir / "business-events" / f"{name}.json").read_text())
    return data


def contract_part(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ENVELOPE_FIELDS}


def test_catalog_has_the_events_the_issue_names() -> None:
    for event in (
        "PurchaseOrderConfirmedBusinessEvent",
        "VendorInvoicePostedBusinessEvent",
        "SalesInvoicePostedBusinessEvent",
        "BusinessEventsAlertEvent",
        "BatchJobFailedBusinessEvent",
        "NAVAXDMFImportStatusBusinessEvent",
        "NAVAXDMFExportBusinessEvent",
    ):
        assert CATALOG[event].event_id == event
    assert event_definition("salesinvoicepostedbusinessevent").event_id == "SalesInvoicePostedBusinessEvent"
    with pytest.raises(PayloadError, match="unknown business event"):
        event_definition("NoSuchBusinessEvent")


def test_current_envelope_formats() -> None:
    payload = make("SalesInvoicePostedBusinessEvent", {"InvoiceId": "CIV-1"}, EnvelopeVariant.CURRENT)
    assert list(payload) == sorted(payload)
    assert set(payload) >= CURRENT_ENVELOPE
    assert GUID.match(payload["EventId"])
    assert BRACED_GUID.match(payload["InitiatingUserAADObjectId"])
    assert WCF_DATE.match(payload["EventTime"])
    assert payload["EventTime"].endswith("000)/")
    assert ISO_7.match(payload["EventTimeIso8601"])
    seconds = int(payload["EventTime"][6:-2]) // 1000
    assert payload["EventTimeIso8601"].startswith(
        datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
    )
    assert payload["BusinessEventLegalEntity"] == "usmf"
    assert payload["LegalEntity"] == "usmf"
    assert payload["ContextRecordSubject"] == ""
    assert payload["ParentContextRecordSubjects"] == []
    assert WCF_DATE.match(payload["InvoiceDate"])
    assert payload["InvoiceId"] == "CIV-1"
    assert isinstance(payload["ControlNumber"], int)
    assert payload["MajorVersion"] == 0


def test_legacy_alert_event_has_exactly_the_sample_keys(samples_dir: Path) -> None:
    expected = sample(samples_dir, "BusinessEventsAlertEvent")
    given = contract_part(expected)
    payload = make("BusinessEventsAlertEvent", given, EnvelopeVariant.LEGACY)
    assert list(payload) == list(expected)  # same keys in the same (alphabetical) order
    assert contract_part(payload) == given
    assert GUID.match(payload["EventId"])


def test_legacy_purchase_order_confirmed_matches_the_captured_payload() -> None:
    captured = json.loads(CAPTURED_PO_CONFIRMED)
    given = dict(contract_part(captured).items())
    payload = make("PurchaseOrderConfirmedBusinessEvent", given, EnvelopeVariant.LEGACY, "brmf")
    assert list(payload) == list(captured)
    assert payload["PurchaseOrderDate"] == captured["PurchaseOrderDate"]
    assert payload["LegalEntity"] == "brmf"
    assert payload["TransactionCurrencyAmount"] == 90055.6


def test_legacy_dmf_export_event_reproduces_the_custom_envelope(samples_dir: Path) -> None:
    expected = sample(samples_dir, "NAVAXDMFExportBusinessEvent")
    payload = make("NAVAXDMFExportBusinessEvent", contract_part(expected), EnvelopeVariant.LEGACY)
    assert list(payload) == list(expected)  # no BusinessEventId, no ControlNumber
    assert BRACED_GUID.match(payload["EventId"])
    current = make("NAVAXDMFExportBusinessEvent", contract_part(expected), EnvelopeVariant.CURRENT)
    assert set(current) == set(expected) | CURRENT_ENVELOPE
    assert GUID.match(current["EventId"])


def test_dmf_import_status_event_mixes_date_forms_like_the_sample(samples_dir: Path) -> None:
    expected = sample(samples_dir, "NAVAXDMFImportStatusBusinessEvent")
    given = contract_part(expected)
    legacy = make("NAVAXDMFImportStatusBusinessEvent", given, EnvelopeVariant.LEGACY)
    assert list(legacy) == list(expected)
    assert contract_part(legacy) == given  # ISO strings stay ISO, the enum label stays a label
    current = make("NAVAXDMFImportStatusBusinessEvent", {}, EnvelopeVariant.CURRENT)
    assert set(current) == set(expected) | CURRENT_ENVELOPE
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$", current["EndDateTime"])


def test_schema_is_the_downloaded_schema_shape() -> None:
    schema = schema_payload(CATALOG["BatchJobStartedBusinessEvent"])
    assert json.dumps(schema, separators=(",", ":")) == DOWNLOADED_BATCH_SCHEMA
    for definition in CATALOG.values():
        assert list(schema_payload(definition)) == sorted(schema_payload(definition))


def test_control_numbers_increase_with_gaps() -> None:
    numbers = [next_control_number() for _ in range(300)]
    steps = [b - a for a, b in itertools.pairwise(numbers)]
    assert all(step >= 1 for step in steps)
    assert any(step > 1 for step in steps)
    assert numbers[0] > 5_637_144_576


def test_iso8601_has_seven_fraction_digits() -> None:
    assert iso8601_7(1_672_408_275_294_274_200) == "2022-12-30T13:51:15.2942742Z"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-02", "/Date(1714608000000)/"),
        ("2024-05-02T17:30:00Z", "/Date(1714608000000)/"),  # a TransDate keeps the day
        ("/Date(1714608000000)/", "/Date(1714608000000)/"),
        (1714608000000, "/Date(1714608000000)/"),
        (datetime(2024, 5, 2, 9, tzinfo=UTC), "/Date(1714608000000)/"),
    ],
)
def test_date_fields_accept_the_usual_forms(value: Any, expected: str) -> None:
    definition = CATALOG["SalesInvoicePostedBusinessEvent"]
    assert contract_fields(definition, {"InvoiceDate": value}, legal_entity="usmf")["InvoiceDate"] == expected


def test_field_checks() -> None:
    definition = CATALOG["SalesInvoicePostedBusinessEvent"]
    with pytest.raises(PayloadError, match="has no field Bogus"):
        contract_fields(definition, {"Bogus": 1}, legal_entity="usmf")
    with pytest.raises(PayloadError, match="needs a number"):
        contract_fields(definition, {"InvoiceTaxAmount": "lots"}, legal_entity="usmf")
    with pytest.raises(PayloadError, match="needs a date"):
        contract_fields(definition, {"InvoiceDate": "yesterday"}, legal_entity="usmf")
    values = contract_fields(definition, {"InvoiceTaxAmount": 100.0}, legal_entity="demf")
    assert values["InvoiceTaxAmount"] == 100
    assert isinstance(values["InvoiceTaxAmount"], int)
    assert values["LegalEntity"] == "demf"


# -- model ----------------------------------------------------------------------------------------------


def test_endpoint_needs_exactly_one_url_source_and_masks_the_key() -> None:
    with pytest.raises(ConfigError, match="exactly one"):
        Endpoint.from_json({"name": "x"})
    with pytest.raises(ConfigError, match="exactly one"):
        Endpoint.from_json({"name": "x", "url": "https://f/api/x", "key_vault_secret": "s"})
    with pytest.raises(ConfigError, match="payload_variant"):
        Endpoint.from_json({"name": "x", "url": "https://f/api/x", "payload_variant": "v2"})
    endpoint = Endpoint.from_json(
        {"name": "fn", "url": "https://f.azurewebsites.net/api/be?code=TOPSECRET", "headers": {"x-k": "v"}}
    )
    shown = json.dumps(endpoint.to_json())
    assert "TOPSECRET" not in shown
    assert '"x-k": "***"' in shown
    moved = Endpoint.from_json({"key_vault_secret": "be-url"}, existing=endpoint)
    assert moved.url is None
    assert moved.key_vault_secret == "be-url"
    assert moved.id == endpoint.id


def test_activation_limit_per_event_and_legal_entity() -> None:
    model = BusinessEventsModel()
    model.settings = DeliverySettings(endpoints_per_event=2)
    ids = [
        model.put_endpoint(Endpoint.from_json({"name": f"e{i}", "url": "http://h/x"})).id for i in range(4)
    ]
    event = "SalesInvoicePostedBusinessEvent"
    model.activate(event, "usmf", ids[0])
    model.activate(event, None, ids[1])  # all legal entities: counts in usmf too
    assert model.activate(event, "usmf", ids[0]).endpoint_id == ids[0]  # the same one again: no-op
    with pytest.raises(ConfigError, match="limit") as info:
        model.activate(event, "usmf", ids[2])
    assert info.value.status == 409
    with pytest.raises(ConfigError, match="in use"):
        model.delete_endpoint("e0")
    assert [e.id for e in model.targets(event, "USMF")] == [ids[0], ids[1]]
    assert [e.id for e in model.targets(event, "demf")] == [ids[1]]


def test_fault_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="duplicate_probability"):
        DeliveryFaults.from_json({"duplicate_probability": 2})
    with pytest.raises(ConfigError, match="unknown fault option"):
        DeliveryFaults.from_json({"drop": 1})
    assert DeliveryFaults.from_json({"delay_ms": 10}).active
