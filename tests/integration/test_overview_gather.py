"""``gather_overview`` against real Azurite and the emulator: records written with the real layout and
ledger modules are counted per route, listings stop at the cap, D365 is asked within its limits, a part
with invalid settings is reported without hiding the others, and the window bounds what counts as recent."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.context import AppContext
from shared.pipelines.imports import ImportSettings
from shared.pipelines.imports.layout import inflight_name
from shared.pipelines.imports.ledger import JobRecords
from shared.pipelines.imports.outcome import Location, Outcomes, import_record
from shared.pipelines.overview import gather_overview, read_status_record
from shared.settings import Settings
from shared.status import Outcome, utc_now
from tests.integration.test_imports_stack import PACKAGE_ROUTE, stack_env
from tests.support.d365 import faults
from tests.support.stack import AzuriteInfo, EmulatorInfo


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


def _finished(context: AppContext, outcome: Outcome, route: str, file_name: str) -> str:
    settings = context.settings.section(ImportSettings)
    outcomes = Outcomes(context.store, settings)
    location = outcomes.final_location(outcome, route, datetime.now(UTC), f"{route}-{'0' * 16}", file_name)
    outcomes.write_record(location, import_record(f"in/{file_name}", outcome, f"{outcome} on purpose"))
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
    assert overview.event_counts == {"updated": 0, "retrying": 0, "poisoned": 0}
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


def test_a_failing_d365_costs_the_overview_its_budget_not_the_retry_deadline(make_context, emulator) -> None:
    context: AppContext = make_context(
        OVERVIEW_D365_SECONDS="1", D365_RETRY_MAX_SECONDS="30", D365_RETRY_MAX_ATTEMPTS="100"
    )
    _job(context, "groups-00000000000000b1", minutes_ago=10)
    _job(context, "groups-00000000000000b2", minutes_ago=5)
    faults(emulator, {"family": "odata", "error_rate": 1, "error_status": 503})
    try:
        started = time.monotonic()
        overview = gather_overview(context)
        elapsed = time.monotonic() - started
    finally:
        faults(emulator)
    assert all(job.d365_status is None for job in overview.in_flight)
    assert overview.in_flight[0].d365_error  # 503 until what was left of the budget ran out
    assert elapsed < 8, elapsed  # cut at OVERVIEW_D365_SECONDS (1 s), not at D365_RETRY_MAX_SECONDS (30 s)
