"""The receiver against real Azurite: payload variants stored once with their bytes, duplicates (sequential
and concurrent), every rejection with its status and message, batches, and a storage outage."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.context import AppContext
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_events import process_stored_event, receive_events
from shared.settings import ConfigurationError
from tests.support.business_events import (
    blob_names,
    body_of,
    events_context,
    events_env,
    make_event,
    read_blob,
)
from tests.support.stack import AzuriteInfo, EmulatorInfo, free_port

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def env(emulator: EmulatorInfo, azurite: AzuriteInfo) -> dict[str, str]:
    return events_env(
        emulator,
        azurite,
        BUSINESS_EVENTS_MAX_BYTES="4096",
        BUSINESS_EVENTS_SHARED_SECRET="let-me-in",
        BUSINESS_EVENTS_SECRET_HEADER="X-Events-Secret",
        BUSINESS_EVENTS_ALLOWED_EVENT_IDS=(
            "SalesInvoicePostedBusinessEvent,BusinessEventsAlertEvent,NAVAXDMFImportStatusBusinessEvent,"
            "PurchaseOrderConfirmedBusinessEvent"
        ),
    )


@pytest.fixture
def context(env: dict[str, str]) -> Iterator[AppContext]:
    with events_context(env) as built:
        yield built


def headers(**extra: str) -> dict[str, str]:
    return {**JSON, "x-events-secret": "let-me-in", **extra}


def test_published_variants_are_stored_with_their_exact_bytes(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo, samples_dir: Path
) -> None:
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    for name in ("BusinessEventsAlertEvent.json", "NAVAXDMFImportStatusBusinessEvent.json"):
        body = (samples_dir / "business-events" / name).read_bytes()
        result = receive_events(context, body, headers())
        assert (result.status, result.body["status"]) == (200, "stored"), result.body
    assert blob_names(azurite, raw) == [
        "BusinessEventsAlertEvent/_none/2019/10/11/D60A8657-E87C-43A8-8D7D-826EBF0490D7.json",
        "NAVAXDMFImportStatusBusinessEvent/usmf/2020/05/29/E6471158-09E3-4BDA-A508-924A8FE7A43B.json",
    ]
    stored, metadata = read_blob(azurite, raw, blob_names(azurite, raw)[1])
    assert stored == (samples_dir / "business-events" / "NAVAXDMFImportStatusBusinessEvent.json").read_bytes()
    assert set(metadata) == {"received_at", "source"}
    assert metadata["source"] == "native"


def test_event_grid_string_and_object_data(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    as_string, as_object = make_event(), make_event()
    delivery = [
        {
            "id": "g1",
            "eventType": "SalesInvoicePostedBusinessEvent",
            "subject": "usmf",
            "data": json.dumps(as_string),
        },
        {"id": "g2", "eventType": "SalesInvoicePostedBusinessEvent", "subject": "usmf", "data": as_object},
    ]
    result = receive_events(context, json.dumps(delivery).encode(), headers())
    assert result.status == 200
    assert (result.body["stored"], result.body["duplicates"]) == (2, 0)
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    prefix = "SalesInvoicePostedBusinessEvent/usmf/2022/12/30/"
    stored, metadata = read_blob(azurite, raw, f"{prefix}{as_string['EventId']}.json")
    assert stored == json.dumps(as_string).encode()
    assert (metadata["source"], metadata["envelope_id"], metadata["envelope_subject"]) == (
        "eventgrid",
        "g1",
        "usmf",
    )
    stored, metadata = read_blob(azurite, raw, f"{prefix}{as_object['EventId']}.json")
    assert json.loads(stored) == as_object
    assert metadata["original"] == "reserialized"


def test_event_grid_validation_handshake(context: AppContext) -> None:
    handshake = [
        {
            "id": "v1",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "data": {"validationCode": "CODE-123", "validationUrl": "https://example.invalid/validate"},
        }
    ]
    # Event Grid may not send custom delivery headers on the handshake: it works without the secret
    result = receive_events(
        context, json.dumps(handshake).encode(), {"aeg-event-type": "SubscriptionValidation"}
    )
    assert (result.status, result.body) == (200, {"validationResponse": "CODE-123"})
    # ... but the header does not let anything else through
    other = receive_events(context, body_of(make_event()), {"aeg-event-type": "SubscriptionValidation"})
    assert other.status == 401


def test_sequential_duplicates_are_answered_200_without_a_second_write(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    event = make_event(EventId="{" + make_event()["EventId"].lower() + "}")
    first = receive_events(context, body_of(event), headers())
    again = receive_events(
        context, body_of({**event, "EventId": event["EventId"].strip("{}").upper()}), headers()
    )
    assert (first.status, first.body["status"]) == (200, "stored")
    assert (again.status, again.body["status"]) == (200, "duplicate")
    assert first.body["eventId"] == again.body["eventId"]
    names = blob_names(azurite, env["BUSINESS_EVENTS_CONTAINER"])
    assert len(names) == 1
    assert read_blob(azurite, env["BUSINESS_EVENTS_CONTAINER"], names[0])[0] == body_of(
        event
    )  # the first kept


def test_fifty_concurrent_copies_store_one(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    body = body_of(make_event())
    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(lambda _: receive_events(context, body, headers()), range(50)))
    assert [r.status for r in results] == [200] * 50
    statuses = sorted(r.body["status"] for r in results)
    assert statuses == ["duplicate"] * 49 + ["stored"]
    assert len(blob_names(azurite, env["BUSINESS_EVENTS_CONTAINER"])) == 1


@pytest.mark.parametrize(
    ("body", "extra", "status", "error", "words"),
    [
        (b'{"EventId": ', {}, 400, "invalid_json", "line 1 column 13"),
        (
            b"<event/>",
            {"Content-Type": "application/xml"},
            415,
            "unsupported_content_type",
            "application/xml",
        ),
        (
            b'{"BusinessEventId": "SalesInvoicePostedBusinessEvent"}',
            {},
            400,
            "missing_fields",
            "EventId, EventTime",
        ),
        (b"x" * 5000, {}, 413, "too_large", "at most 4096"),
        (
            body_of(make_event(BusinessEventId="VendorPaymentPosted")),
            {},
            422,
            "event_not_accepted",
            "VendorPaymentPosted",
        ),
        (body_of(make_event()), {"x-events-secret": "guess"}, 401, "unauthorized", "X-Events-Secret"),
        (body_of(make_event(ControlNumber="many")), {}, 400, "invalid_field", "ControlNumber"),
        (b"[]", {}, 400, "empty_batch", "no events"),
    ],
)
def test_rejections_say_what_is_wrong_and_store_nothing(
    context: AppContext,
    env: dict[str, str],
    azurite: AzuriteInfo,
    body: bytes,
    extra: dict[str, str],
    status: int,
    error: str,
    words: str,
) -> None:
    result = receive_events(context, body, headers(**extra))
    assert result.status == status, result.body
    assert (result.body["status"], result.body["error"]) == ("rejected", error)
    assert words in result.body["message"]
    text = json.dumps(result.body)
    for secret in (
        "let-me-in",
        env["AzureWebJobsStorage"],
        "devstoreaccount1",
        env["BUSINESS_EVENTS_CONTAINER"],
    ):
        assert secret not in text
    assert blob_names(azurite, env["BUSINESS_EVENTS_CONTAINER"]) == []


def test_a_batch_answers_per_event(context: AppContext, env: dict[str, str], azurite: AzuriteInfo) -> None:
    good, refused = make_event(), make_event(BusinessEventId="Unknown")
    body = json.dumps([good, {"nope": 1}, refused, good]).encode()
    result = receive_events(context, body, headers())
    assert result.status == 400
    statuses = [r["status"] for r in result.body["results"]]
    assert [r["index"] for r in result.body["results"]] == [0, 1, 2, 3]
    assert statuses[1:3] == ["rejected", "rejected"]
    # the batch is stored in parallel: either copy of the repeated event may be the one stored
    assert sorted([statuses[0], statuses[3]]) == ["duplicate", "stored"]
    assert result.body["results"][2]["error"] == "event_not_accepted"
    assert "2 of 4 events were not accepted" in result.body["message"]
    assert len(blob_names(azurite, env["BUSINESS_EVENTS_CONTAINER"])) == 1


def test_storage_outage_is_a_fast_503_d365_will_retry(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    dead = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50"
        f"uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:{free_port()}/devstoreaccount1;"
    )
    env = events_env(emulator, azurite, AzureWebJobsStorage=dead, BUSINESS_EVENTS_STORE_TIMEOUT_SECONDS="2")
    with events_context(env) as context:
        started = time.monotonic()
        result = receive_events(context, body_of(make_event()), JSON)
        elapsed = time.monotonic() - started
    assert result.status == 503
    assert result.body["error"] == "storage_unavailable"
    assert "127.0.0.1" not in json.dumps(result.body)
    assert elapsed < 8, elapsed  # well inside D365's 10 s timeout (the SDK's own retries would take minutes)


def test_a_broken_handler_configuration_does_not_stop_receipt(
    emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    env = events_env(emulator, azurite, BUSINESS_EVENTS_HANDLERS='{"*": {"type": "teleport"}}')
    with events_context(env, sections=(BusinessEventSettings,)) as context:
        event = make_event()
        result = receive_events(context, body_of(event), JSON)
        assert (result.status, result.body["status"]) == (200, "stored")
        names = blob_names(azurite, env["BUSINESS_EVENTS_CONTAINER"])
        with pytest.raises(ConfigurationError, match="BUSINESS_EVENTS_HANDLERS"):
            process_stored_event(context, names[0])  # the trigger fails; the stored event waits for a fix
    assert len(names) == 1
