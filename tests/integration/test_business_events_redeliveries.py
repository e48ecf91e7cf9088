"""Redeliveries of the same EventId against real Azurite and the emulator: stored once, each redelivery
recorded (also when copies arrive concurrently) without touching the raw blob the trigger watches, shown as
"redelivered ×N" by the operations page (its function, JSON and HTML) and ``python -m ops status``; and a
record that cannot be written (storage failing or hanging) never changes the "duplicate" answer."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from shared.context import AppContext, reset_context
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_event_redeliveries import REDELIVERIES_PREFIX, redeliveries_prefix
from shared.pipelines.business_events import process_stored_event, receive_events
from shared.pipelines.overview import gather_overview
from tests.integration.test_health import functions
from tests.integration.test_ops_cli import run_ops
from tests.support.business_events import blob_names, body_of, events_context, events_env, make_event
from tests.support.scripted_server import Reply, ScriptedServer
from tests.support.stack import AzuriteInfo, EmulatorInfo

JSON = {"Content-Type": "application/json"}


@pytest.fixture
def env(emulator: EmulatorInfo, azurite: AzuriteInfo) -> dict[str, str]:
    return events_env(emulator, azurite)


@pytest.fixture
def context(env: dict[str, str]) -> Iterator[AppContext]:
    with events_context(env) as built:
        yield built


def fresh_event() -> dict[str, Any]:
    """A new event raised now (the overview lists the raw folders of recent days, by the event's time)."""
    now = datetime.now(UTC)
    return make_event(
        EventTime=f"/Date({int(now.timestamp()) * 1000})/",
        EventTimeIso8601=now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
    )


def _raw_blob_facts(context: AppContext, container: str, name: str) -> tuple[Any, ...]:
    properties = context.store.service.get_blob_client(container, name).get_blob_properties()
    tags = context.store.service.get_blob_client(container, name).get_blob_tags()
    return properties.etag, properties.last_modified, dict(properties.metadata), tags


def blob_names_in(context: AppContext, container: str, prefix: str = "") -> list[str]:
    client = context.store.service.get_container_client(container)
    if not client.exists():
        return []
    return sorted(b.name for b in client.list_blobs(name_starts_with=prefix or None))


def _page(app: dict[str, Any], **params: str) -> str:
    """The operations page function's answer (HTML, or JSON with ``format="json"``)."""
    request = func.HttpRequest(
        method="GET", url="http://localhost/api/operations", headers={}, params=params, route_params={},
        body=b"",
    )  # fmt: skip
    response = app["operations_page"](request)
    assert response.status_code == 200
    return str(response.get_body().decode())


def _event_json(rows: list[dict[str, Any]], event_id: str) -> dict[str, Any]:
    [row] = [r for r in rows if r["event_id"] == event_id]
    return row


def test_three_deliveries_store_one_event_and_every_view_shows_two_redeliveries(
    env: dict[str, str], context: AppContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_context()
    app = functions()
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    event = fresh_event()
    event_id = event["EventId"]

    def deliver() -> dict[str, Any]:
        request = func.HttpRequest(
            method="POST",
            url="http://localhost/api/business-events",
            headers=JSON,
            params={},
            route_params={},
            body=body_of(event),
        )
        response = app["business_events_receive"](request)
        assert response.status_code == 200
        answer: dict[str, Any] = json.loads(response.get_body())
        return answer

    try:
        assert deliver()["status"] == "stored"
        [name] = blob_names_in(context, raw)
        before = _raw_blob_facts(context, raw, name)
        assert [deliver()["status"], deliver()["status"]] == ["duplicate", "duplicate"]
        assert blob_names_in(context, raw) == [name]  # one stored event
        # the trigger watches the raw blob: its bytes, metadata, ETag, time and tags are untouched
        assert _raw_blob_facts(context, raw, name) == before
        state = env["BUSINESS_EVENTS_STATE_CONTAINER"]
        assert len(blob_names_in(context, state, redeliveries_prefix(event_id))) == 2
        assert process_stored_event(context, name).outcome == "processed"

        rows = json.loads(_page(app, format="json"))["events"]
        row = _event_json(rows, event_id)
        assert (row["deliveries"], row["outcome"], row["attempts"]) == (3, "succeeded", 1)
        assert row["last_redelivered"]
        html = _page(app)
        assert 'data-deliveries="3"' in html
        assert "redelivered ×2</span>" in html
    finally:
        reset_context()

    as_json = run_ops(env, tmp_path, "status", "--json", "--no-d365")
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    assert _event_json(json.loads(as_json.stdout)["events"], event_id)["deliveries"] == 3
    text = run_ops(env, tmp_path, "status", "--no-d365")
    assert text.returncode == 0, text.stderr
    [line] = [line for line in text.stdout.splitlines() if event_id in line]
    assert "[redelivered ×2: 3 deliveries]" in line


def test_concurrent_copies_are_each_counted(context: AppContext, azurite: AzuriteInfo) -> None:
    settings = context.settings.section(BusinessEventSettings)
    first = fresh_event()  # 12 copies at once, before anything is stored: one stores, 11 are redeliveries
    body = body_of(first)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: receive_events(context, body, JSON), range(12)))
    assert sorted(a.body["status"] for a in answers) == ["duplicate"] * 11 + ["stored"]
    second = fresh_event()  # stored first, then 16 concurrent redeliveries
    assert receive_events(context, body_of(second), JSON).body["status"] == "stored"
    with ThreadPoolExecutor(max_workers=16) as pool:
        again = list(pool.map(lambda _: receive_events(context, body_of(second), JSON), range(16)))
    assert {a.body["status"] for a in again} == {"duplicate"}

    state = settings.state_container
    assert len(blob_names(azurite, state, redeliveries_prefix(first["EventId"]))) == 11
    assert len(blob_names(azurite, state, redeliveries_prefix(second["EventId"]))) == 16
    assert len(blob_names(azurite, settings.raw_container)) == 2
    overview = gather_overview(context, ask_d365=False)
    deliveries = {row.event_id: row.deliveries for row in overview.events}
    assert deliveries == {first["EventId"]: 12, second["EventId"]: 17}
    assert not any(row.duplicate for row in overview.events)  # another EventId's duplicate marker: not this


def test_an_event_delivered_once_shows_no_marker(context: AppContext) -> None:
    event = fresh_event()
    assert receive_events(context, body_of(event), JSON).body["status"] == "stored"
    [row] = gather_overview(context, ask_d365=False).events
    assert (row.deliveries, row.last_redelivered) == (1, None)
    state = context.settings.section(BusinessEventSettings).state_container
    assert blob_names_in(context, state, REDELIVERIES_PREFIX) == []


def _scripted_env(
    env: dict[str, str], azurite: AzuriteInfo, server: ScriptedServer, **extra: str
) -> dict[str, str]:
    storage = azurite.connection_string.replace(azurite.blob_endpoint, f"{server.url}/devstoreaccount1")
    assert storage != azurite.connection_string
    return {**env, "AzureWebJobsStorage": storage, "BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS": "0", **extra}


EXISTS = Reply(409, {"x-ms-error-code": "BlobAlreadyExists"}, b"")


@pytest.mark.parametrize(
    ("replies", "words"),
    [
        ([EXISTS, Reply(500, {"x-ms-error-code": "InternalError"})], "storage answered 500 InternalError"),
        ([EXISTS, Reply(201, delay=5.0)], "Read timed out"),  # hangs past the receiver's store budget
        # the failed create itself used up the budget: the record is not even started
        ([Reply(409, {"x-ms-error-code": "BlobAlreadyExists"}, delay=0.9)], "no time left"),
    ],
    ids=["failing", "hanging", "no-time-left"],
)
def test_a_record_that_cannot_be_written_still_answers_duplicate_within_the_budget(
    env: dict[str, str],
    azurite: AzuriteInfo,
    caplog: pytest.LogCaptureFixture,
    replies: list[Reply],
    words: str,
) -> None:
    event = fresh_event()
    # a storage account over real HTTP: the event exists already, the record write fails, hangs or is late
    with ScriptedServer(replies) as server:
        scripted = _scripted_env(env, azurite, server, BUSINESS_EVENTS_STORE_TIMEOUT_SECONDS="1")
        with events_context(scripted) as context, caplog.at_level(logging.WARNING):
            started = time.monotonic()
            answer = receive_events(context, body_of(event), JSON)
            seconds = time.monotonic() - started
        paths = [r.path.split("?")[0] for r in server.requests]
    assert (answer.status, answer.body["status"]) == (200, "duplicate")
    assert seconds < 3.0  # the 1 s store budget, not the 5 s hang nor the SDK's retries
    assert len(paths) == len(replies), paths  # the failed create, at most one record attempt: no retry
    if len(paths) == 2:
        assert paths[1].startswith(f"/devstoreaccount1/{env['BUSINESS_EVENTS_STATE_CONTAINER']}/")
    [line] = [r.getMessage() for r in caplog.records if "EVENT_REDELIVERY_NOT_RECORDED" in r.getMessage()]
    assert f"event_id={event['EventId']}" in line
    assert words in line, line
    assert "AccountKey" not in line
