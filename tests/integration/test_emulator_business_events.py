"""The emulator's business events over real HTTP (ref §5): endpoints and activations through the admin API,
events raised on demand and by OData writes, delivered by POST to a real local receiver with D365's retry,
timeout and error-log behaviour, the fault options, the older envelope and Key Vault-held endpoint URLs."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from localstack.processes import EmulatorInfo
from shared.d365.odata import ODataClient
from tests.support.d365 import make_transport
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer

INVOICE = "SalesInvoicePostedBusinessEvent"
CONFIRMED = "SalesOrderConfirmedBusinessEvent"
ALERT = "BusinessEventsAlertEvent"
GUID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")
FUNCTION_KEY = "fn-key-0123456789"


class Receiver:
    """A real HTTP endpoint that records every POST and answers ``status`` after ``delay`` seconds."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        self.server = ScriptedServer(self._answer)

    def _answer(self, request: RecordedRequest) -> Reply:
        with self._lock:
            status, delay = self.status, self.delay
        return Reply(status, {"Content-Type": "text/plain"}, b"" if status < 300 else b"receiver down", delay)

    def answer(self, status: int, delay: float = 0.0) -> None:
        with self._lock:
            self.status, self.delay = status, delay

    @property
    def requests(self) -> list[RecordedRequest]:
        return list(self.server.requests)

    def payloads(self) -> list[dict[str, Any]]:
        return [json.loads(r.body) for r in self.requests]

    def url(self, path: str = "/api/BusinessEventsHttp") -> str:
        return f"{self.server.url}{path}?code={FUNCTION_KEY}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with receiver.server:
        yield receiver


@pytest.fixture
def events(clean_emulator: EmulatorInfo) -> Iterator[EmulatorInfo]:
    """A reset emulator with fast retries (0.1 s instead of 1 s); reset again afterwards."""
    clean_emulator.admin("PUT", "business-events/settings", json={"retry_wait_ms": 100})
    yield clean_emulator
    clean_emulator.admin("POST", "reset")


def admin_raw(emulator: EmulatorInfo, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{emulator.base_url}/_emulator/business-events/{path}", timeout=30, **kwargs
    )


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def endpoint(emulator: EmulatorInfo, url: str, name: str = "function", **extra: Any) -> str:
    created = emulator.admin("POST", "business-events/endpoints", json={"name": name, "url": url, **extra})
    return str(created["id"])


def activate(emulator: EmulatorInfo, event: str, endpoint_id: str, legal_entity: str | None = "usmf") -> str:
    body = {"event": event, "endpoint": endpoint_id, "legal_entity": legal_entity}
    return str(emulator.admin("POST", "business-events/activations", json=body)["id"])


def raise_event(
    emulator: EmulatorInfo, event: str, legal_entity: str = "usmf", **fields: Any
) -> dict[str, Any]:
    body = {"event": event, "legal_entity": legal_entity, "fields": fields}
    answer: dict[str, Any] = emulator.admin("POST", "business-events/raise", json=body)
    return answer


def settle(emulator: EmulatorInfo) -> None:
    wait_until(
        lambda: emulator.admin("GET", "business-events")["pending"] == 0, what="an empty delivery queue"
    )


# --- on demand --------------------------------------------------------------------------------------------


def test_raise_on_demand_is_delivered_once_with_the_real_shape(
    events: EmulatorInfo, receiver: Receiver
) -> None:
    endpoint_id = endpoint(events, receiver.url())
    activate(events, INVOICE, endpoint_id)
    raised = raise_event(events, INVOICE, InvoiceId="CIV-000777", InvoiceDate="2024-05-02")
    assert raised["activated"] is True
    assert len(raised["deliveries"]) == 1

    wait_until(lambda: receiver.requests, what="the delivery")
    settle(events)
    [request] = receiver.requests
    assert request.method == "POST"
    assert request.route == "/api/BusinessEventsHttp"
    assert request.query["code"] == [FUNCTION_KEY]
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    payload = json.loads(request.body)
    assert list(payload) == sorted(payload)
    assert payload["BusinessEventId"] == INVOICE
    assert payload["BusinessEventLegalEntity"] == "usmf"
    assert payload["LegalEntity"] == "usmf"
    assert payload["EventId"] == raised["event_id"]
    assert GUID.match(payload["EventId"])
    assert payload["ControlNumber"] == raised["control_number"]
    assert re.match(r"^/Date\(\d+000\)/$", payload["EventTime"])
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$", payload["EventTimeIso8601"])
    assert re.match(r"^\{[0-9A-F-]{36}\}$", payload["InitiatingUserAADObjectId"])
    assert payload["InvoiceId"] == "CIV-000777"
    assert payload["InvoiceDate"] == "/Date(1714608000000)/"

    [delivery] = events.admin("GET", "business-events/deliveries")["deliveries"]
    assert delivery["outcome"] == "delivered"
    assert delivery["status"] == 200
    assert len(delivery["attempts"]) == 1
    listed = json.dumps(events.admin("GET", "business-events/endpoints"))
    assert FUNCTION_KEY not in listed  # the function key never shows

    other = raise_event(events, INVOICE, legal_entity="demf")  # not activated for demf
    assert other["activated"] is False
    assert other["deliveries"] == []
    assert raise_event(events, ALERT)["activated"] is False
    settle(events)
    assert len(receiver.requests) == 1


def test_catalog_schema_and_admin_errors(events: EmulatorInfo, receiver: Receiver) -> None:
    catalog = {e["BusinessEventId"]: e for e in events.admin("GET", "business-events/catalog")["events"]}
    for event in (INVOICE, "PurchaseOrderConfirmedBusinessEvent", "VendorInvoicePostedBusinessEvent", ALERT):
        assert event in catalog
        assert catalog[event]["Fields"]
    schema = admin_raw(events, "GET", "catalog/BatchJobFailedBusinessEvent/schema")
    assert "attachment" in schema.headers["content-disposition"]
    assert schema.json()["JobEndUtcDateTime"] == "/Date(-2208988800000)/"

    assert admin_raw(events, "POST", "raise", json={"event": "NoSuchEvent"}).status_code == 400
    bad_field = admin_raw(events, "POST", "raise", json={"event": INVOICE, "fields": {"Nope": 1}})
    assert bad_field.status_code == 400
    assert "Nope" in bad_field.json()["error"]
    assert admin_raw(events, "POST", "endpoints", json={"name": "x"}).status_code == 400
    endpoint_id = endpoint(events, receiver.url())
    assert (
        admin_raw(events, "POST", "endpoints", json={"name": "FUNCTION", "url": receiver.url()}).status_code
        == 409
    )
    activate(events, INVOICE, endpoint_id)
    assert admin_raw(events, "DELETE", f"endpoints/{endpoint_id}").status_code == 409  # in use
    events.admin("PUT", "business-events/settings", json={"endpoints_per_event": 1})
    second = endpoint(events, receiver.url(), name="second")
    assert (
        admin_raw(events, "POST", "activations", json={"event": INVOICE, "endpoint": second}).status_code
        == 409
    )


# --- emission from OData ----------------------------------------------------------------------------------


def test_odata_changes_raise_events_after_commit(events: EmulatorInfo, receiver: Receiver) -> None:
    endpoint_id = endpoint(events, receiver.url())
    activate(events, INVOICE, endpoint_id)
    activate(events, CONFIRMED, endpoint_id)
    odata = ODataClient(make_transport(events))
    order = {"dataAreaId": "usmf", "SalesOrderNumber": "000001"}

    odata.update("SalesOrderHeadersV2", order, {"SalesOrderName": "renamed"})  # no business meaning
    odata.update(
        "VendorsV2", {"dataAreaId": "usmf", "VendorAccountNumber": "US-101"}, {"VendorOrganizationName": "x"}
    )
    odata.update("SalesOrderHeadersV2", order, {"SalesOrderStatus": "Invoiced"})
    invoice = wait_until(receiver.payloads, what="the invoice event")[0]
    assert invoice["BusinessEventId"] == INVOICE
    assert invoice["SalesOrderId"] == "000001"
    assert invoice["LegalEntity"] == "usmf"
    assert invoice["InvoiceId"] == "CIV-000001"
    assert invoice["InvoiceAmountInAccountingCurrency"] > 0

    confirmation = odata.call_action(
        "SalesOrderHeadersV2", "Confirm", key={"dataAreaId": "usmf", "SalesOrderNumber": "000006"}
    )
    confirmed = wait_until(lambda: receiver.payloads()[1:], what="the confirmation event")[0]
    assert confirmed["BusinessEventId"] == CONFIRMED
    assert confirmed["ConfirmationId"] == confirmation
    assert confirmed["SalesOrderNumber"] == "000006"
    assert confirmed["ControlNumber"] > invoice["ControlNumber"]

    odata.update("SalesOrderHeadersV2", order, {"SalesOrderStatus": "Invoiced"})  # no transition, no event
    settle(events)
    assert [p["BusinessEventId"] for p in receiver.payloads()] == [INVOICE, CONFIRMED]


# --- delivery semantics -----------------------------------------------------------------------------------


def test_failures_are_retried_three_times_then_logged_and_resent(
    events: EmulatorInfo, receiver: Receiver
) -> None:
    receiver.answer(500)
    activate(events, INVOICE, endpoint(events, receiver.url()))
    raised = raise_event(events, INVOICE)
    errors = wait_until(lambda: events.admin("GET", "business-events/errors")["errors"], what="the error log")
    settle(events)
    attempts = receiver.requests
    assert len(attempts) == 4  # 1 + retry count 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(attempts)]
    assert all(0.09 <= gap < 1.0 for gap in gaps), gaps  # retry_wait_ms=100
    assert len({r.body for r in attempts}) == 1

    [error] = errors
    assert error["attempts"] == 4
    assert error["last_status"] == 500
    assert "HTTP 500" in error["last_error"]
    assert error["event_id"] == raised["event_id"]
    assert error["business_event_id"] == INVOICE
    download = admin_raw(events, "GET", f"errors/{error['id']}/payload")
    assert download.content == attempts[0].body
    assert "attachment" in download.headers["content-disposition"]
    detail = events.admin("GET", f"business-events/errors/{error['id']}")
    assert [a["status"] for a in detail["attempt_log"]] == [500, 500, 500, 500]

    receiver.answer(200)
    events.admin("POST", f"business-events/errors/{error['id']}/resend")
    wait_until(lambda: len(receiver.requests) == 5, what="the resend")
    settle(events)
    assert receiver.requests[-1].body == attempts[0].body  # same EventId and ControlNumber
    assert events.admin("GET", "business-events/errors")["errors"] == []
    outcomes = [d["outcome"] for d in events.admin("GET", "business-events/deliveries")["deliveries"]]
    assert outcomes == ["failed", "delivered"]


def test_timeout_counts_as_a_failed_attempt(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/settings", json={"timeout_ms": 200, "retry_count": 1})
    receiver.answer(200, delay=1.0)
    activate(events, ALERT, endpoint(events, receiver.url()))
    raise_event(events, ALERT)
    [error] = wait_until(lambda: events.admin("GET", "business-events/errors")["errors"], what="the error")
    assert error["attempts"] == 2
    assert error["last_status"] is None
    assert "timeout" in error["last_error"]
    assert FUNCTION_KEY not in error["last_error"]


def test_refused_connection_goes_to_the_error_log(events: EmulatorInfo) -> None:
    from tests.support.scripted_server import refused_url

    events.admin("PUT", "business-events/settings", json={"retry_count": 0})
    activate(events, ALERT, endpoint(events, f"{refused_url()}/api/x?code={FUNCTION_KEY}"))
    raise_event(events, ALERT)
    [error] = wait_until(lambda: events.admin("GET", "business-events/errors")["errors"], what="the error")
    assert error["attempts"] == 1
    assert FUNCTION_KEY not in error["last_error"]


# --- faults -----------------------------------------------------------------------------------------------


def test_duplicate_fault_sends_the_same_event_again(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/faults", json={"duplicate_probability": 1, "duplicate_count": 2})
    activate(events, INVOICE, endpoint(events, receiver.url()))
    raised = raise_event(events, INVOICE)
    wait_until(lambda: len(receiver.requests) == 3, what="three copies")
    settle(events)
    payloads = receiver.payloads()
    assert len(payloads) == 3
    assert {(p["EventId"], p["ControlNumber"]) for p in payloads} == {
        (raised["event_id"], raised["control_number"])
    }
    kinds = sorted(d["kind"] for d in events.admin("GET", "business-events/deliveries")["deliveries"])
    assert kinds == ["duplicate", "duplicate", "event"]


def test_reorder_fault_shuffles_a_window(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/settings", json={"processing_threads": 1})
    endpoint_id = endpoint(events, receiver.url(), faults={"reorder_window": 5})
    activate(events, INVOICE, endpoint_id)
    raised = [raise_event(events, INVOICE)["control_number"] for _ in range(5)]
    wait_until(lambda: len(receiver.requests) == 5, what="five deliveries")
    received = [p["ControlNumber"] for p in receiver.payloads()]
    assert sorted(received) == raised
    assert received != raised


def test_delay_fault_holds_delivery(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/faults", json={"delay_ms": 500})
    activate(events, ALERT, endpoint(events, receiver.url()))
    started = time.monotonic()
    raise_event(events, ALERT)
    [request] = wait_until(lambda: receiver.requests, what="the delayed delivery")
    assert request.at - started >= 0.45


# --- endpoint options -------------------------------------------------------------------------------------


def test_legacy_envelope_variant(events: EmulatorInfo, receiver: Receiver, samples_dir: Path) -> None:
    activate(events, ALERT, endpoint(events, receiver.url(), payload_variant="legacy"))
    activate(events, "NAVAXDMFExportBusinessEvent", endpoint(events, receiver.url("/api/other"), name="old"))
    sample = json.loads((samples_dir / "business-events" / "BusinessEventsAlertEvent.json").read_text())
    events.admin("PATCH", "business-events/endpoints/old", json={"payload_variant": "legacy"})
    raise_event(events, ALERT, UserId="Chris.McKelt", FieldId=3)
    raise_event(events, "NAVAXDMFExportBusinessEvent", NoOfRecords=7)
    wait_until(lambda: len(receiver.requests) == 2, what="two deliveries")
    by_id = {p.get("BusinessEventId", "(none)"): p for p in receiver.payloads()}
    alert = by_id[ALERT]
    assert list(alert) == list(sample)  # the 2019 envelope: no BusinessEventLegalEntity, no EventTimeIso8601
    export = by_id["(none)"]  # this custom legacy event has neither BusinessEventId nor ControlNumber
    assert "ControlNumber" not in export
    assert re.match(r"^\{[0-9A-F-]{36}\}$", export["EventId"])
    assert export["LegalEntity"] == "usmf"
    assert export["NoOfRecords"] == 7


def test_endpoint_url_from_key_vault(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/settings", json={"retry_count": 0})
    events.admin("PUT", "keyvault/secrets/be-endpoint-url", json={"value": receiver.url("/api/fromvault")})
    created = events.admin(
        "POST", "business-events/endpoints", json={"name": "vaulted", "key_vault_secret": "be-endpoint-url"}
    )
    activate(events, INVOICE, created["id"], legal_entity=None)  # all legal entities
    raise_event(events, INVOICE, legal_entity="demf")
    [request] = wait_until(lambda: receiver.requests, what="the delivery")
    assert request.route == "/api/fromvault"
    assert request.query["code"] == [FUNCTION_KEY]
    assert json.loads(request.body)["BusinessEventLegalEntity"] == "demf"

    missing = events.admin(
        "POST", "business-events/endpoints", json={"name": "missing", "key_vault_secret": "not-there"}
    )
    activate(events, ALERT, missing["id"])
    raise_event(events, ALERT)
    [error] = wait_until(lambda: events.admin("GET", "business-events/errors")["errors"], what="the error")
    assert "Key Vault secret 'not-there'" in error["last_error"]
    assert error["endpoint_name"] == "missing"


# --- lifecycle --------------------------------------------------------------------------------------------


def test_deactivation_stops_delivery(events: EmulatorInfo, receiver: Receiver) -> None:
    endpoint_id = endpoint(events, receiver.url())
    activate(events, INVOICE, endpoint_id)
    raise_event(events, INVOICE)
    wait_until(lambda: receiver.requests, what="the first delivery")
    answer = events.admin("POST", "business-events/activations/deactivate", json={"event": INVOICE})
    assert len(answer["deactivated"]) == 1
    assert raise_event(events, INVOICE)["activated"] is False
    settle(events)
    assert len(receiver.requests) == 1
    assert events.admin("GET", "business-events/activations")["activations"] == []
    assert admin_raw(events, "DELETE", f"endpoints/{endpoint_id}").status_code == 204


def test_reset_drops_pending_deliveries_and_configuration(events: EmulatorInfo, receiver: Receiver) -> None:
    events.admin("PUT", "business-events/faults", json={"delay_ms": 800})
    activate(events, INVOICE, endpoint(events, receiver.url()))
    raise_event(events, INVOICE)
    assert events.admin("GET", "business-events")["pending"] == 1
    events.admin("POST", "reset")
    status = events.admin("GET", "business-events")
    assert status["pending"] == 0
    assert status["endpoints"] == 0
    assert status["activations"] == 0
    assert status["faults"]["delay_ms"] == 0
    assert status["settings"]["retry_wait_ms"] == 1000
    time.sleep(1.0)
    assert receiver.requests == []
