"""``gather_overview`` against real Azurite and the emulator: records written with the real layout and
ledger modules are counted per route, listings stop at the cap, D365 is asked within its limits, a part
with invalid settings is reported without hiding the others, and the window bounds what counts as recent.
Business events go through the real receiver and processing; storage that is down or hangs is a closed
port and a loopback socket that never answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ops.status import format_overview
from shared.context import AppContext
from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.handlers import HandlerRegistry
from shared.events.model import BusinessEvent
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_events import process_stored_event, receive_events
from shared.pipelines.imports import ImportSettings
from shared.pipelines.imports.layout import inflight_name
from shared.pipelines.imports.ledger import JobRecords
from shared.pipelines.imports.outcome import Location, Outcomes, import_record
from shared.pipelines.imports.resubmit import resubmit_import
from shared.pipelines.overview import PageLinks, gather_overview, read_status_record, render_page
from shared.settings import Settings
from shared.status import Outcome, utc_now
from tests.integration.test_imports_stack import PACKAGE_ROUTE, stack_env
from tests.support.business_events import make_event, unique
from tests.support.d365 import faults
from tests.support.stack import AzuriteInfo, EmulatorInfo, free_port

PARTS = ["imports", "business events", "exports"]
EXPORTS = json.dumps([{"name": "sales-orders", "activity_id": "5b3f2c1e-0000-4e11-8f00-00000000e001"}])


@pytest.fixture
def make_context(emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[object]:
    made: list[AppContext] = []

    def make(**overrides: str) -> AppContext:
        env = stack_env(emulator, azurite, **{"IMPORT_ROUTES": json.dumps([PACKAGE_ROUTE]), **overrides})
        context = AppContext.from_settings(Settings.from_env(env))
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


def _job(context: AppContext, job_id: str, minutes_ago: float) -> None:
    settings = context.settings.section(ImportSettings)
    sent = (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat().replace("+00:00", "Z")
    record = import_record(f"{settings.inbound_container}/groups/{job_id}.csv", Outcome.SENT, "sent to D365")
    inflight = inflight_name(job_id, f"{job_id}.csv")
    JobRecords(context.store, settings.state_container).create(
        job_id,
        {"job_id": job_id, "route": "groups", "target": "package", "file_name": f"{job_id}.csv",
         "input": {"container": settings.state_container, "name": inflight}, "sent_at": sent, "polls": 0,
         "status": record.to_dict()},
    )  # fmt: skip
    Outcomes(context.store, settings).write_record(Location(settings.state_container, inflight), record)


def _finished(
    context: AppContext, outcome: Outcome, route: str, file_name: str, subject: str | None = None
) -> str:
    settings = context.settings.section(ImportSettings)
    outcomes = Outcomes(context.store, settings)
    location = outcomes.final_location(outcome, route, datetime.now(UTC), f"{route}-{'0' * 16}", file_name)
    record = import_record(subject or f"in/{file_name}", outcome, f"{outcome} on purpose")
    outcomes.write_record(location, record)
    context.store.blob(location.container, location.name).upload_blob(b"x", overwrite=True)
    return str(location)


def test_counts_per_route_and_the_listing_cap(make_context) -> None:
    context: AppContext = make_context(OVERVIEW_LIST_CAP="100")
    settings = context.settings.section(ImportSettings)
    inbound = context.store.container(settings.inbound_container)
    for index in range(105):
        inbound.upload_blob(f"groups/{index:03}.csv", b"a")
    inbound.upload_blob("zzz/stray.csv", b"a")  # listed after the cap: not counted
    _job(context, "groups-0123456789abcdef", minutes_ago=3)
    _finished(context, Outcome.SUCCEEDED, "groups", "a.csv")
    _finished(context, Outcome.DUPLICATE, "groups", "b.csv")
    failed = _finished(context, Outcome.FAILED, "groups", "c.csv")
    _finished(context, Outcome.REJECTED, "_unrouted", "d.csv")
    overview = gather_overview(context, ask_d365=False)
    routes = {r.route: r for r in overview.routes}
    assert (routes["groups"].waiting, routes["groups"].in_flight, routes["groups"].stuck) == (100, 1, 0)
    assert (routes["groups"].archived, routes["groups"].failed) == (2, 1)
    assert routes["_unrouted"].failed == 1
    assert routes["_unrouted"].waiting == 0
    assert any("stopped at 100 blobs" in note for note in overview.notes), overview.notes
    assert f"{failed}.status.json" in [f.record_path for f in overview.failures]
    [job] = overview.in_flight
    assert job.record_path == f"{settings.state_container}/{inflight_name(job.job_id, job.file)}.status.json"
    assert (job.d365_status, job.stuck, job.outcome) == (None, False, "sent")
    later = gather_overview(context, ask_d365=False, now=datetime.now(UTC) + timedelta(hours=48))
    assert {(r.archived, r.failed) for r in later.routes} == {(0, 0)}  # outside the window
    assert later.failures == []
    assert later.in_flight[0].stuck  # 48 hours in flight is past IMPORT_STUCK_AFTER_MINUTES


def test_d365_is_asked_within_its_limit(make_context) -> None:
    context: AppContext = make_context(OVERVIEW_D365_STATUS_LIMIT="1")
    _job(context, "groups-00000000000000a1", minutes_ago=10)
    _job(context, "groups-00000000000000a2", minutes_ago=5)
    overview = gather_overview(context)
    asked = {job.job_id: job for job in overview.in_flight}
    oldest, newer = asked["groups-00000000000000a1"], asked["groups-00000000000000a2"]
    assert oldest.d365_status or oldest.d365_error  # the emulator does not know this execution
    assert (newer.d365_status, newer.d365_error) == (None, None)
    assert any("D365 was not asked about 1" in note for note in overview.notes)


def test_a_part_with_invalid_settings_is_reported_and_the_rest_shown(make_context) -> None:
    context: AppContext = make_context(IMPORT_ROUTES="[{", EXPORT_ACTIVITIES="nope")
    overview = gather_overview(context, ask_d365=False)
    assert [p.split(":")[0] for p in overview.problems] == ["imports", "exports"]
    assert "IMPORT_ROUTES" in overview.problems[0]
    assert overview.event_counts == {"received": 0, "retrying": 0, "poisoned": 0}
    assert overview.unknown == ["imports", "exports"]
    assert utc_now()[:10] == overview.generated_at[:10]
    assert read_status_record(context, "errors/x.status.json").status == 503  # containers unknown


def test_one_status_record_is_served_by_its_path(make_context) -> None:
    context: AppContext = make_context()
    stored = _finished(context, Outcome.FAILED, "groups", "a b&c.csv")
    answer = read_status_record(context, f" {stored}.status.json ")
    assert answer.status == 200
    assert json.loads(answer.body)["outcome"] == "failed"
    assert read_status_record(context, f"{stored}.missing.status.json").status == 404
    assert read_status_record(context, stored).status == 400  # the input itself is not served


# A hang guard, not a timing assertion: with the retry deadline (30 s) the first call alone would run past it.
@pytest.mark.timeout(25)
def test_a_failing_d365_costs_the_overview_its_budget_not_the_retry_deadline(make_context, emulator) -> None:
    context: AppContext = make_context(
        OVERVIEW_D365_SECONDS="1", D365_RETRY_MAX_SECONDS="30", D365_RETRY_MAX_ATTEMPTS="100"
    )
    _job(context, "groups-00000000000000b1", minutes_ago=10)
    _job(context, "groups-00000000000000b2", minutes_ago=5)
    # D365 answers each request after 1.5 s: only the overview's budget (1 s) ends the first call in time
    faults(emulator, {"family": "odata", "latency_ms": 1500})
    try:
        overview = gather_overview(context)
    finally:
        faults(emulator)
    oldest, newer = sorted(overview.in_flight, key=lambda job: job.job_id)
    assert oldest.d365_status is None
    assert oldest.d365_error  # cut when the budget ran out
    assert (newer.d365_status, newer.d365_error) == (None, None)  # the budget was spent: not asked
    assert any("D365 was not asked about 1 in-flight job(s)" in note for note in overview.notes)


class _Handler:
    """A Python-registered business-event handler: succeeds, or refuses for good (the event is poisoned)."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        if self.refuse:
            raise PermanentHandlerError(f"the target refused {event.event_id}")
        return HandlerResult("done")


def _registry(refuse: bool = False) -> HandlerRegistry:
    registry = HandlerRegistry()
    registry.register("*", _Handler(refuse), name="refusing" if refuse else "accepting")
    return registry


def _wcf(moment: datetime) -> dict[str, str]:
    return {
        "EventTime": f"/Date({int(moment.timestamp()) * 1000})/",
        "EventTimeIso8601": moment.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
    }


def _receive(context: AppContext, events: list[dict[str, Any]]) -> list[str]:
    """Store events through the receiver (one batch); their raw blob names."""
    answer = receive_events(context, json.dumps(events).encode(), {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    raw = context.settings.section(BusinessEventSettings).raw_container
    names = {b.name.rsplit("/", 1)[-1]: b.name for b in context.store.container(raw).list_blobs()}
    return [names[f"{event['EventId']}.json"] for event in events]


def test_recent_events_come_by_receipt_and_poisoned_ones_from_the_poison_container(make_context) -> None:
    context: AppContext = make_context(
        OVERVIEW_LIST_CAP="100",
        OVERVIEW_RECENT_LIMIT="3",
        BUSINESS_EVENTS_CONTAINER=unique("events"),
        BUSINESS_EVENTS_STATE_CONTAINER=unique("evstate"),
        BUSINESS_EVENTS_POISON_CONTAINER=unique("evpoison"),
    )
    now = datetime.now(UTC)
    # 100 events D365 raised yesterday and delivered now: processing records sort first by EventId
    yesterday = _wcf(now - timedelta(days=1))
    old = [make_event(EventId=f"00000000-0000-0000-0000-{i:012d}", ControlNumber=i, **yesterday)
           for i in range(100)]  # fmt: skip
    with ThreadPoolExecutor(8) as pool:
        assert {r.outcome for r in pool.map(lambda n: process_stored_event(context, n, registry=_registry()),
                                            _receive(context, old))} == {"processed"}  # fmt: skip
    time.sleep(1.1)  # blob times have whole seconds: the next ones are received later
    poisoned = make_event(EventId="FFFFFFFF-0000-0000-0000-000000000000", ControlNumber=1000, **_wcf(now))
    [name] = _receive(context, [poisoned])
    assert process_stored_event(context, name, registry=_registry(refuse=True)).outcome == "poisoned"
    time.sleep(1.1)
    later = [make_event(EventId=f"FFFFFFFF-0000-0000-0000-00000000000{i}", ControlNumber=i, **_wcf(now))
             for i in (1, 2, 3)]  # fmt: skip
    for name in _receive(context, later):
        assert process_stored_event(context, name, registry=_registry()).outcome == "processed"
    time.sleep(1.1)
    unprocessed = make_event(EventId="FFFFFFFF-0000-0000-0000-000000000009", ControlNumber=3000, **_wcf(now))
    _receive(context, [unprocessed])  # its trigger has not run yet

    overview = gather_overview(context, ask_d365=False)
    assert overview.problems == []
    rows = [(e.event_id, e.outcome) for e in overview.events]
    assert rows[0] == (unprocessed["EventId"], "received")  # the newest receipt first, record or not
    assert overview.events[0].record_path is None
    assert {event_id for event_id, _ in rows[1:]} <= {e["EventId"] for e in later}
    assert len(rows) == 3
    # pushed out of the recent rows by newer events, still among the failures (from its poison record)
    [failure] = overview.failures
    assert (failure.kind, failure.outcome, failure.reason_code) == ("business-event", "poisoned", None)
    assert poisoned["EventId"] in failure.subject
    assert "the target refused" in failure.message
    assert read_status_record(context, failure.record_path).status == 200
    page = render_page(overview, PageLinks("/api/operations"))
    assert "reason <code>SalesInvoicePostedBusinessEvent" not in page
    assert overview.event_counts == {"received": 105, "retrying": 0, "poisoned": 1}


def test_a_resubmitted_failure_is_marked(make_context) -> None:
    context: AppContext = make_context()
    inbound = context.settings.section(ImportSettings).inbound_container
    failed = _finished(context, Outcome.FAILED, "groups", "again.csv", f"{inbound}/groups/again.csv")
    assert resubmit_import(context, failed).outcome == "resubmitted"
    overview = gather_overview(context, ask_d365=False)
    [failure] = [f for f in overview.failures if f.record_path == f"{failed}.status.json"]
    assert failure.resubmitted is not None
    assert failure.resubmitted["to"].endswith("again.csv")
    assert "re-submitted" in render_page(overview, PageLinks("/api/operations"))


def _dead_storage(azurite: AzuriteInfo, port: int) -> str:
    dead = azurite.connection_string.replace(
        azurite.blob_endpoint, f"http://127.0.0.1:{port}/devstoreaccount1"
    )
    assert dead != azurite.connection_string
    return dead


@pytest.mark.timeout(30)  # a hang guard: with the storage SDK's default retries this took minutes
def test_unreachable_storage_makes_every_part_unknown_at_once(make_context, azurite: AzuriteInfo) -> None:
    context: AppContext = make_context(
        AzureWebJobsStorage=_dead_storage(azurite, free_port()), EXPORT_ACTIVITIES=EXPORTS
    )
    overview = gather_overview(context, ask_d365=False)
    assert overview.unknown == PARTS
    assert "unreachable" in overview.problems[0]
    assert "Connection refused" in overview.problems[0]
    assert all("not asked" in problem for problem in overview.problems[1:]), overview.problems
    assert "AccountKey" not in json.dumps(overview.to_dict())
    assert overview.to_dict()["totals"] is None
    text = format_overview(overview)
    assert "no import route configured" not in text
    assert "Business events: unknown" in text
    assert "Recent exports (unknown)" in text
    page = render_page(overview, PageLinks("/api/operations"))
    assert 'data-card="Stuck" title="could not be gathered: see above"><div class="n">?</div>' in page
    assert "Unknown: the exports could not be gathered" in page
    assert (
        read_status_record(
            context, f"{context.settings.section(ImportSettings).errors_container}/x.status.json"
        ).status
        == 503
    )


class _SilentServer:
    """A loopback socket that accepts connections and never answers: storage that hangs."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self.socket.close()
        for connection in self.accepted:
            connection.close()


@pytest.mark.timeout(30)  # a hang guard: the SDK's default is several attempts with long read timeouts
def test_hanging_storage_gets_one_attempt_within_the_budget(make_context, azurite: AzuriteInfo) -> None:
    server = _SilentServer()
    try:
        context: AppContext = make_context(
            AzureWebJobsStorage=_dead_storage(azurite, server.port),
            OVERVIEW_STORAGE_SECONDS="1",
            EXPORT_ACTIVITIES=EXPORTS,
        )
        overview = gather_overview(context, ask_d365=False)
    finally:
        server.close()
    assert overview.unknown == PARTS
    assert len(server.accepted) == 1  # one attempt, no retry, and no part asked after it failed
    assert "unreachable" in overview.problems[0], overview.problems
