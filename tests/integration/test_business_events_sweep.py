"""The retry timer's sweep on real Azurite (blob index tags): a stored event whose blob trigger never fired
is processed exactly once, a normally processed event is never touched, concurrent sweeps (and a late
trigger) never run the handlers twice."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from shared.context import AppContext
from shared.events.handler_api import HandlerContext, HandlerResult
from shared.events.handlers import HandlerRegistry
from shared.events.layout import raw_path, state_path
from shared.events.model import BusinessEvent, parse_event
from shared.events.settings import BusinessEventSettings
from shared.pipelines import business_event_sweep
from shared.pipelines.business_event_tags import tag_refusal
from shared.pipelines.business_events import (
    ProcessOutcome,
    process_stored_event,
    receive_events,
    retry_and_sweep,
    sweep_unprocessed_events,
)
from tests.support.business_events import body_of, events_context, events_env, make_event, read_json
from tests.support.stack import AzuriteInfo, EmulatorInfo

LATER = timedelta(minutes=16)  # past the default BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS (900)


class Counter:
    """A handler counting its runs per event (slow enough for races to overlap)."""

    def __init__(self, pause: float = 0.0) -> None:
        self.calls: dict[str, int] = {}
        self.pause = pause
        self.lock = threading.Lock()

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        time.sleep(self.pause)
        with self.lock:
            self.calls[event.event_id] = self.calls.get(event.event_id, 0) + 1
        return HandlerResult("counted")


def registry_for(counter: Counter) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("*", counter, name="count")
    return registry


@pytest.fixture
def env(emulator: EmulatorInfo, azurite: AzuriteInfo) -> dict[str, str]:
    return events_env(emulator, azurite)


@pytest.fixture
def context(env: dict[str, str]) -> Iterator[AppContext]:
    with events_context(env) as built:
        yield built


def store(context: AppContext) -> tuple[str, str]:
    """Receive a fresh event (its blob trigger never fires here): (EventId, raw blob name)."""
    event = make_event()
    result = receive_events(context, body_of(event), {"Content-Type": "application/json"})
    assert result.body["status"] == "stored", result.body
    return result.body["eventId"], raw_path(parse_event(event, b""))


def tags(azurite: AzuriteInfo, container: str, name: str) -> dict[str, str]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    return dict(service.get_blob_client(container, name).get_blob_tags())


def later(delta: timedelta = LATER) -> Any:
    moment = datetime.now(UTC) + delta
    return lambda: moment


def test_a_missed_event_is_processed_by_the_sweep_exactly_once(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    registry = registry_for(counter)
    event_id, name = store(context)
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    assert tags(azurite, raw, name)["processing"] == "pending"
    young = sweep_unprocessed_events(context, registry=registry)
    assert (young.results, young.skipped) == ([], "")  # younger than the min age: the trigger's turn
    with caplog.at_level(logging.INFO):
        report = retry_and_sweep(context, registry=registry, clock=later())
    assert report.retried == []
    [result] = report.swept.results
    assert (result.outcome, result.event_id, result.attempts) == (ProcessOutcome.PROCESSED, event_id, 1)
    assert counter.calls == {event_id: 1}
    record = read_json(azurite, env["BUSINESS_EVENTS_STATE_CONTAINER"], state_path(event_id))
    assert record["outcome"] == "succeeded"
    assert "attempt 1 (sweep)" in [h["message"] for h in record["history"]]
    assert tags(azurite, raw, name) == {"processing": "started"}
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("EVENT_SWEPT:")]
    assert f"event_id={event_id}" in line
    assert "outcome=processed" in line
    again = sweep_unprocessed_events(context, registry=registry, clock=later(timedelta(days=1)))
    assert (again.results, again.already_started) == ([], 0)
    late_trigger = process_stored_event(context, f"{raw}/{name}", registry=registry)
    assert late_trigger.outcome is ProcessOutcome.ALREADY_PROCESSED
    assert counter.calls == {event_id: 1}


def test_a_normally_processed_event_is_not_touched(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    counter = Counter()
    registry = registry_for(counter)
    event_id, name = store(context)
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    assert process_stored_event(context, name, registry=registry).outcome is ProcessOutcome.PROCESSED
    assert tags(azurite, raw, name) == {"processing": "started"}
    state = context.store.blob(env["BUSINESS_EVENTS_STATE_CONTAINER"], state_path(event_id))
    etag = state.get_blob_properties().etag
    report = sweep_unprocessed_events(context, registry=registry, clock=later())
    assert (report.results, report.already_started, report.more) == ([], 0, False)
    assert state.get_blob_properties().etag == etag  # the record was not rewritten
    assert counter.calls == {event_id: 1}


def test_a_lost_tag_is_repaired_without_processing_again(
    context: AppContext, env: dict[str, str], azurite: AzuriteInfo
) -> None:
    counter = Counter()
    registry = registry_for(counter)
    event_id, name = store(context)
    raw = env["BUSINESS_EVENTS_CONTAINER"]
    pending = tags(azurite, raw, name)
    process_stored_event(context, name, registry=registry)
    context.store.blob(raw, name).set_blob_tags(pending)  # as if the process died before re-tagging
    report = sweep_unprocessed_events(context, registry=registry, clock=later())
    assert (report.results, report.already_started) == ([], 1)
    assert tags(azurite, raw, name) == {"processing": "started"}
    assert counter.calls == {event_id: 1}


def test_concurrent_sweeps_and_a_late_trigger_run_each_handler_once(
    context: AppContext, env: dict[str, str]
) -> None:
    counter = Counter(pause=0.2)
    registry = registry_for(counter)
    stored = [store(context) for _ in range(3)]
    clock = later()
    start = threading.Barrier(4)

    def sweep() -> Any:
        start.wait()
        return sweep_unprocessed_events(context, registry=registry, clock=clock)

    def trigger() -> Any:
        start.wait()
        return process_stored_event(context, stored[0][1], registry=registry, clock=clock)

    with ThreadPoolExecutor(max_workers=4) as pool:
        sweeps = [pool.submit(sweep) for _ in range(3)]
        late = pool.submit(trigger)
        reports = [f.result() for f in sweeps]
        trigger_outcome = late.result().outcome
    assert {r.skipped for r in reports} <= {"", "busy"}  # one sweep at a time; the others step aside
    outcomes = [result.outcome for report in reports for result in report.results] + [trigger_outcome]
    assert outcomes.count(ProcessOutcome.PROCESSED) == 3
    assert set(outcomes) <= {
        ProcessOutcome.PROCESSED,
        ProcessOutcome.BUSY,
        ProcessOutcome.ALREADY_PROCESSED,
    }
    assert counter.calls == {event_id: 1 for event_id, _ in stored}
    # a sweep that ran anyway (the lock expired mid-run, say) finds every record and does nothing
    again = sweep_unprocessed_events(context, registry=registry, clock=clock)
    assert again.results == []
    assert counter.calls == {event_id: 1 for event_id, _ in stored}


def test_the_batch_bounds_one_run_and_the_next_run_continues(
    emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    env = events_env(emulator, azurite, BUSINESS_EVENTS_SWEEP_BATCH="2")
    with events_context(env) as context:
        counter = Counter()
        registry = registry_for(counter)
        stored = [store(context) for _ in range(3)]
        first = sweep_unprocessed_events(context, registry=registry, clock=later())
        assert (len(first.results), first.more) == (2, True)
        second = sweep_unprocessed_events(context, registry=registry, clock=later())
        assert (len(second.results), second.more) == (1, False)
        assert counter.calls == {event_id: 1 for event_id, _ in stored}


def test_min_age_zero_turns_tags_and_sweep_off(emulator: EmulatorInfo, azurite: AzuriteInfo) -> None:
    env = events_env(emulator, azurite, BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS="0")
    with events_context(env) as context:
        _, name = store(context)
        assert tags(azurite, env["BUSINESS_EVENTS_CONTAINER"], name) == {}
        report = sweep_unprocessed_events(context, clock=later())
        assert (report.results, report.skipped) == ([], "disabled")


@pytest.fixture
def no_tag_rights(azurite: AzuriteInfo) -> Iterator[str]:
    """A storage connection whose SAS may read, write and list blobs but not tag or find by tags (as a
    role without tag rights); the process-wide refusal pause is reset afterwards."""
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert service.account_name is not None
    sas = generate_account_sas(
        service.account_name,
        service.credential.account_key,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, create=True, list=True, add=True, delete=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    yield f"BlobEndpoint={azurite.blob_endpoint};SharedAccessSignature={sas}"
    tag_refusal.reset()


def test_storage_refusing_tags_never_stops_receipt_or_processing(
    emulator: EmulatorInfo, azurite: AzuriteInfo, no_tag_rights: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = events_env(emulator, azurite, AzureWebJobsStorage=no_tag_rights)
    with events_context(env) as context, caplog.at_level(logging.INFO):
        counter = Counter()
        registry = registry_for(counter)
        stored = [store(context) for _ in range(2)]  # both stored (the first one retried without tags)
        for _, name in stored:
            assert process_stored_event(context, name, registry=registry).outcome is ProcessOutcome.PROCESSED
        report = sweep_unprocessed_events(context, registry=registry, clock=later())
        assert (report.results, report.skipped) == ([], "tags_refused")
    assert counter.calls == {event_id: 1 for event_id, _ in stored}
    refused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("EVENT_TAGS_REFUSED:")]
    assert len(refused) == 1  # once, not once per event
    assert "status=403" in refused[0]
    assert "sig=" not in refused[0]


def test_sweeps_racing_without_the_sweep_lock_still_run_each_handler_once(
    context: AppContext, env: dict[str, str]
) -> None:
    """The sweep lock only saves work: correctness comes from processing's per-event lease and record."""
    counter = Counter(pause=0.1)
    registry = registry_for(counter)
    stored = [store(context) for _ in range(3)]
    settings = context.settings.section(BusinessEventSettings)
    clock = later()
    start = threading.Barrier(3)

    def unlocked_sweep() -> Any:
        start.wait()
        return business_event_sweep._sweep(context, settings, registry, clock)

    with ThreadPoolExecutor(max_workers=3) as pool:
        reports = list(pool.map(lambda _: unlocked_sweep(), range(3)))
    outcomes = [result.outcome for report in reports for result in report.results]
    assert outcomes.count(ProcessOutcome.PROCESSED) == 3
    assert counter.calls == {event_id: 1 for event_id, _ in stored}
