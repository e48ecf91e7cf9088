"""End to end through the local runner serving the real function app on real HTTP: the emulator raises a
business event on an OData change and POSTs it to the receiver; the blob trigger enriches it into blob
storage. Also: 50 concurrent HTTP copies stored and processed once, answered before processing, and
an operator replay through the admin-level HTTP function."""

from __future__ import annotations

import importlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from localstack.processes import ROOT
from runner import Runner, StartedInfo
from shared.context import AppContext, get_context, reset_context
from tests.support.business_events import blob_names, events_env, make_event, read_blob, read_json, unique
from tests.support.scripted_server import RecordedRequest, Reply, ScriptedServer
from tests.support.stack import AzuriteInfo, EmulatorInfo, run_azurite

# The other families' functions: not what these tests are about, so not served.
OTHER_FUNCTIONS = ("exports_dequeue", "dmf_exports", "import_inbound_file", "import_monitor")


class Downstream:
    """The forward target: holds requests while ``gate`` is closed, refuses bodies marked ``REFUSE``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.refuse = True
        self.server = ScriptedServer(self.answer)

    def answer(self, request: RecordedRequest) -> Reply:
        self.gate.wait(30)
        if self.refuse and b"REFUSE" in request.body:
            return Reply(400, body=b"refused")
        return Reply(204)

    def received(self, event_id: str) -> int:
        return sum(1 for r in self.server.requests if r.headers.get("idempotency-key") == event_id)


@dataclass
class Stack:
    info: StartedInfo
    env: dict[str, str]
    azurite: AzuriteInfo
    downstream: Downstream

    @property
    def receiver(self) -> str:
        return f"{self.info.base_url}/api/business-events"

    def key(self) -> str:
        return self.info.key_for("business_events_receive")

    def state(self, event_id: str) -> Any:
        names = blob_names(
            self.azurite, self.env["BUSINESS_EVENTS_STATE_CONTAINER"], f"business-events/{event_id}"
        )
        return (
            read_json(self.azurite, self.env["BUSINESS_EVENTS_STATE_CONTAINER"], names[0]) if names else None
        )


def eventually(check: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    return check()


@pytest.fixture(scope="module")
def stack(emulator: EmulatorInfo) -> Iterator[Stack]:
    downstream = Downstream()
    handlers = {
        "SalesInvoicePostedBusinessEvent": {
            "type": "enrich",
            "entity_set": "SalesOrderHeadersV2",
            "key": {"dataAreaId": "{legal_entity}", "SalesOrderNumber": "{SalesOrderId}"},
            "related": [
                {
                    "name": "lines",
                    "entity_set": "SalesOrderLines",
                    "match": {"dataAreaId": "{legal_entity}", "SalesOrderNumber": "{SalesOrderId}"},
                }
            ],
        },
        "*": {"type": "forward_http", "url": f"{downstream.server.url}/events"},
    }
    # A fresh Azurite: the function app's blob trigger watches the default "events" container.
    with run_azurite() as azurite, downstream.server, pytest.MonkeyPatch.context() as patch:
        env = events_env(
            emulator,
            azurite,
            BUSINESS_EVENTS_CONTAINER="events",
            BUSINESS_EVENTS_HANDLERS=json.dumps(handlers),
            BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS="0",
            **{f"AzureWebJobs.{name}.Disabled": "true" for name in OTHER_FUNCTIONS},
        )
        for name, value in env.items():
            patch.setenv(name, value)
        reset_context()
        import function_app

        app = importlib.reload(function_app).app  # a fresh app object: get_functions() runs once per object
        runner = Runner(
            app,
            settings=dict(os.environ),
            port=0,
            app_root=ROOT,
            host_id=unique("be-e2e"),
            blob_poll_interval=0.2,
            shutdown_timeout=10,
        )
        info = runner.start()
        try:
            yield Stack(info, env, azurite, downstream)
        finally:
            downstream.gate.set()
            runner.stop(10)
            reset_context()


def post(stack: Stack, body: bytes, **params: str) -> requests.Response:
    return requests.post(
        stack.receiver,
        data=body,
        params={"code": stack.key(), **params},
        headers={"Content-Type": "application/json"},
        timeout=30,
    )


def test_an_order_invoiced_in_the_emulator_ends_as_an_enriched_document(
    stack: Stack, emulator: EmulatorInfo
) -> None:
    emulator.admin("POST", "reset")
    emulator.admin("PUT", "business-events/settings", json={"retry_wait_ms": 200})
    url = f"{stack.receiver}?code={stack.key()}"
    emulator.admin("POST", "business-events/endpoints", json={"name": "functions", "url": url})
    emulator.admin(
        "POST",
        "business-events/activations",
        json={"event": "SalesInvoicePostedBusinessEvent", "legal_entity": "usmf", "endpoint": "functions"},
    )
    context: AppContext = get_context()
    order = next(
        o
        for o in context.odata.list("SalesOrderHeadersV2", filter="dataAreaId eq 'usmf'", cross_company=True)
        if o["SalesOrderStatus"] != "Invoiced"
    )
    number = order["SalesOrderNumber"]
    lines = list(
        context.odata.list(
            "SalesOrderLines",
            filter=f"dataAreaId eq 'usmf' and SalesOrderNumber eq '{number}'",
            cross_company=True,
        )
    )
    context.odata.update(
        "SalesOrderHeadersV2",
        {"dataAreaId": "usmf", "SalesOrderNumber": number},
        {"SalesOrderStatus": "Invoiced"},
    )

    enriched = stack.env["BUSINESS_EVENTS_ENRICHED_CONTAINER"]
    names = eventually(lambda: blob_names(stack.azurite, enriched, "SalesInvoicePostedBusinessEvent/usmf/"))
    assert len(names) == 1, names
    document = read_json(stack.azurite, enriched, names[0])
    assert document["record"]["SalesOrderNumber"] == number
    assert document["record"]["SalesOrderStatus"] == "Invoiced"
    assert len(document["related"]["lines"]) == len(lines)
    fields = document["event"]["fields"]
    assert (fields["InvoiceId"], fields["SalesOrderId"]) == (f"CIV-{number}", number)
    assert document["event"]["legalEntity"].lower() == "usmf"
    raw = blob_names(stack.azurite, "events", "SalesInvoicePostedBusinessEvent/usmf/")
    assert [name.rsplit("/", 1)[1] for name in raw] == [names[0].rsplit("/", 1)[1]]
    deliveries = emulator.admin("GET", "business-events/deliveries")["deliveries"]
    assert [d["outcome"] for d in deliveries] == ["delivered"]


def test_fifty_concurrent_posts_are_stored_and_processed_once(stack: Stack) -> None:
    event = make_event(BusinessEventId="PurchaseOrderConfirmedBusinessEvent", BusinessEventLegalEntity="usmf")
    body = json.dumps(event).encode()
    stack.downstream.gate.clear()  # processing cannot finish until the answers are all in
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(lambda _: post(stack, body), range(50)))
        assert [a.status_code for a in answers] == [200] * 50
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses == ["duplicate"] * 49 + ["stored"]
        state = stack.state(event["EventId"])
        assert state is None or state["outcome"] != "succeeded"  # answered before processing finished
    finally:
        stack.downstream.gate.set()
    done = eventually(lambda: (s := stack.state(event["EventId"])) and s["outcome"] == "succeeded" and s)
    assert done, stack.state(event["EventId"])
    assert done["details"]["attempts"] == 1
    time.sleep(1)  # a second (wrong) processing would have been polled by now
    assert stack.downstream.received(event["EventId"]) == 1
    assert len(blob_names(stack.azurite, "events", "PurchaseOrderConfirmedBusinessEvent/usmf/")) >= 1


def test_rejections_over_http(stack: Stack) -> None:
    assert post(stack, b"{oops").status_code == 400
    wrong_type = requests.post(
        stack.receiver,
        data=b"<a/>",
        params={"code": stack.key()},
        headers={"Content-Type": "text/xml"},
        timeout=10,
    )
    assert (wrong_type.status_code, wrong_type.json()["error"]) == (415, "unsupported_content_type")
    assert requests.post(stack.receiver, data=b"{}", timeout=10).status_code == 401  # no function key
    too_big = post(stack, b"[" + b" " * (1024 * 1024) + b"]")
    assert (too_big.status_code, too_big.json()["error"]) == (413, "too_large")


def test_a_poisoned_event_is_replayed_by_an_operator(stack: Stack) -> None:
    event = make_event(
        BusinessEventId="VendorInvoicePostedBusinessEvent", Note="REFUSE", EventId=str(uuid.uuid4()).upper()
    )
    answer = post(stack, json.dumps(event).encode())
    assert answer.json()["status"] == "stored"
    poisoned = eventually(lambda: (s := stack.state(event["EventId"])) and s["outcome"] == "failed" and s)
    assert poisoned, stack.state(event["EventId"])
    assert "HTTP 400" in poisoned["message"]
    replay = f"{stack.info.base_url}/api/business-events/replay/{event['EventId']}"
    assert requests.post(replay, params={"code": stack.key()}, timeout=10).status_code == 401  # admin only
    stack.downstream.refuse = False
    try:
        answer = requests.post(replay, params={"code": stack.info.master_key}, timeout=30)
    finally:
        stack.downstream.refuse = True
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert [(r["event_id"], r["outcome"]) for r in report["results"]] == [(event["EventId"], "processed")]
    assert stack.state(event["EventId"])["outcome"] == "succeeded"
    assert blob_names(stack.azurite, stack.env["BUSINESS_EVENTS_POISON_CONTAINER"]) == []
    unknown = requests.post(
        f"{replay[:-36]}{uuid.uuid4()}", params={"code": stack.info.master_key}, timeout=10
    )
    assert unknown.status_code == 404


def test_emulator_duplicates_reordering_and_legacy_envelopes(stack: Stack, emulator: EmulatorInfo) -> None:
    emulator.admin("POST", "reset")
    emulator.admin("PUT", "business-events/settings", json={"retry_wait_ms": 200})
    url = f"{stack.receiver}?code={stack.key()}"
    faults = {
        "duplicate_probability": 1.0,
        "duplicate_count": 2,
        "reorder_window": 6,
        "reorder_max_hold_ms": 500,
    }
    emulator.admin(
        "POST",
        "business-events/endpoints",
        json={"name": "chaos", "url": url, "payload_variant": "legacy", "faults": faults},
    )
    for event in ("PurchaseOrderConfirmedBusinessEvent", "NAVAXDMFExportBusinessEvent"):
        emulator.admin(
            "POST",
            "business-events/activations",
            json={"event": event, "legal_entity": "demf", "endpoint": "chaos"},
        )
    raised = [
        emulator.admin(
            "POST",
            "business-events/raise",
            json={"event": "PurchaseOrderConfirmedBusinessEvent", "legal_entity": "demf"},
        )
        for _ in range(5)
    ]
    custom = emulator.admin(
        "POST", "business-events/raise", json={"event": "NAVAXDMFExportBusinessEvent", "legal_entity": "demf"}
    )
    ids = [r["event_id"] for r in raised]
    custom_id = custom["event_id"].strip("{}").upper()

    def all_processed() -> bool:
        states = [stack.state(i) for i in [*ids, custom_id]]
        return all(s is not None and s["outcome"] == "succeeded" for s in states)

    assert eventually(all_processed), [stack.state(i) for i in ids]
    deliveries = eventually(
        lambda: (
            (d := emulator.admin("GET", "business-events/deliveries")["deliveries"])
            and len(d) == 18
            and all(x["outcome"] == "delivered" for x in d)
            and d
        )
    )
    assert deliveries, emulator.admin("GET", "business-events/deliveries")
    assert sorted(d["kind"] for d in deliveries).count("duplicate") == 12  # every event sent 3 times
    for event_id in ids:
        assert stack.downstream.received(event_id) == 1  # processed once despite three deliveries
        assert stack.state(event_id)["details"]["attempts"] == 1
    mark = read_json(
        stack.azurite,
        stack.env["BUSINESS_EVENTS_STATE_CONTAINER"],
        "control-numbers/PurchaseOrderConfirmedBusinessEvent/demf.json",
    )
    numbers = {r["event_id"]: r["control_number"] for r in raised}
    assert mark["control_number"] == max(numbers.values())
    for event_id, number in numbers.items():
        sequence = stack.state(event_id)["details"]["sequence"]
        assert sequence["control_number"] == number
        assert sequence["out_of_order"] == (
            sequence["high_water_mark"] is not None and number < sequence["high_water_mark"]
        )
    # the legacy custom event has neither BusinessEventId nor ControlNumber, and a braced EventId
    raw = blob_names(stack.azurite, "events", "_unidentified/demf/")
    assert [name.rsplit("/", 1)[1] for name in raw] == [f"{custom_id}.json"]
    stored = json.loads(read_blob(stack.azurite, "events", raw[0])[0])
    assert stored["EventId"] == "{" + custom_id + "}"
    assert "BusinessEventId" not in stored
    assert stack.state(custom_id)["details"]["sequence"]["control_number"] is None
