"""The operations overview's pure parts: record path checks, event markers, route attribution, and the
page and report rendering (escaping, links carrying the key)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest

from ops.status import format_overview
from shared.pipelines.imports.settings import Route
from shared.pipelines.overview import (
    EventRow,
    Failure,
    InflightJob,
    Overview,
    PageLinks,
    RecordPathError,
    RecordRules,
    RouteCounts,
    check_record_path,
    render_page,
)
from shared.pipelines.overview.events import event_row, mark_duplicates
from shared.pipelines.overview.imports import day_prefixes, job_route, route_for

RULES = RecordRules(frozenset({"archive", "errors", "exports"}), "state", "evstate", "evpoison")


@pytest.mark.parametrize(
    "path",
    [
        "errors/groups/2026/11/26/groups-0123456789abcdef/orders file.csv.status.json",
        "archive/groups/2026/11/26/job/a.csv.status.json",
        "exports/sales-orders/2026/11/26/3f2c.zip.status.json",
        "state/inflight/groups-0123456789abcdef/a.csv.status.json",
        "evstate/business-events/3294CCE0-5FC8-401C-A56A-FAD2B45DE24E.json",
        "evpoison/3294CCE0-5FC8-401C-A56A-FAD2B45DE24E.json",
        "evpoison/_unreadable/stray/readme.txt.json",
    ],
)
def test_status_records_of_the_apps_containers_are_allowed(path: str) -> None:
    container, name = check_record_path(path, RULES)
    assert f"{container}/{name}" == path


@pytest.mark.parametrize(
    "path",
    [
        "",
        "errors",
        "errors/",
        "errors/../state/jobs/x.json",
        "errors/a/../../state/x.status.json",
        "errors/./x.status.json",
        "errors//x.status.json",
        "/errors/x.status.json",
        "errors\\x.status.json",
        "errors/x.status.json\x00",
        "errors/x.csv",  # an input, not its record
        "errors/x/d365/execution-errors.json",
        "state/jobs/groups-0123456789abcdef.json",  # job records are not served
        "state/ledger/drops/x.json",
        "state/x.status.json",  # only beside in-flight inputs
        "evstate/business-events/../x.json",
        "evstate/business-events/a/b.json",
        "evstate/control-numbers/x/usmf.json",
        "azure-webjobs-secrets/host/host.json",
        "inbound/x.status.json",
        "evpoison/../evstate/x.json",
        "evpoison/x.txt",
        "errors/" + "a" * 1100 + ".status.json",
    ],
)
def test_anything_else_is_refused(path: str) -> None:
    with pytest.raises(RecordPathError):
        check_record_path(path, RULES)


def _record(
    event_id: str, number: int | None, *, mark: int | None = None, attempts: int = 1, **extra: Any
) -> dict[str, Any]:
    sequence = {
        "control_number": number,
        "high_water_mark": mark,
        "out_of_order": mark is not None and number is not None and number < mark,
    }
    return {
        "kind": "business-event",
        "subject": f"events/SalesInvoicePostedBusinessEvent/usmf/2022/12/30/{event_id}.json",
        "outcome": "succeeded",
        "message": "handled by archive",
        "correlation": {"event_id": event_id, "business_event_id": "SalesInvoicePostedBusinessEvent",
                        "legal_entity": "usmf", "control_number": "" if number is None else str(number)},
        "details": {"attempts": attempts, "sequence": sequence, **extra},
        "created": f"2026-11-26T03:00:0{event_id[-1]}Z",
        "updated": "2026-11-26T03:00:09Z",
    }  # fmt: skip


def test_event_markers_come_from_the_stored_control_number_verdicts() -> None:
    first = event_row(_record("e1", 100, mark=None), "st/business-events/e1.json", "events")
    late = event_row(_record("e2", 50, mark=100), "st/business-events/e2.json", "events")
    again = event_row(_record("e3", 100, mark=100), "st/business-events/e3.json", "events")
    retried = event_row(_record("e4", 200, mark=200, attempts=2), "st/business-events/e4.json", "events")
    assert (first.out_of_order, first.duplicate) == (False, False)
    assert (late.out_of_order, late.duplicate, late.high_water_mark) == (True, False, 100)
    assert again.duplicate  # its first attempt found its own ControlNumber already handled
    assert not retried.duplicate  # a retry of the same event meets its own mark: not a duplicate
    assert first.raw_path == "events/SalesInvoicePostedBusinessEvent/usmf/2022/12/30/e1.json"
    assert (first.control_number, first.attempts) == (100, 1)


def test_the_later_of_two_events_with_one_control_number_is_the_duplicate() -> None:
    rows = [
        event_row(_record("e2", 7, mark=None, attempts=3), "s/business-events/e2.json", "events"),
        event_row(_record("e1", 7, mark=None), "s/business-events/e1.json", "events"),
        event_row(_record("e3", None), "s/business-events/e3.json", "events"),
    ]
    mark_duplicates(rows)
    assert [(r.event_id, r.duplicate) for r in rows] == [("e2", True), ("e1", False), ("e3", False)]
    assert rows[0].duplicate_reason == "same ControlNumber 7 as event e1"
    same_second = [
        event_row(_record("e1", 9, mark=9), "s/business-events/e1.json", "events"),  # found 9 handled
        event_row(_record("e2", 9, mark=3), "s/business-events/e2.json", "events"),  # raised the mark to 9
    ]
    mark_duplicates(same_second)
    assert [(r.event_id, r.duplicate) for r in same_second] == [("e1", True), ("e2", False)]


def test_poisoned_and_malformed_records_are_read_defensively() -> None:
    row = event_row(
        {"outcome": "failed", "details": {"poisoned": True, "sequence": "?"}},
        "s/business-events/x.json",
        "events",
    )
    assert (row.event_id, row.poisoned, row.control_number, row.attempts) == ("x", True, None, 0)


def test_routes_are_attributed_like_intake_and_from_job_ids() -> None:
    routes = [Route("groups", "groups/", "package"), Route("usmf-groups", "groups/usmf/", "package")]
    assert route_for("groups/a.csv", routes) == "groups"
    assert route_for("groups/usmf/a.csv", routes) == "usmf-groups"
    assert route_for("other/a.csv", routes) == "_unrouted"
    assert job_route("groups-usmf-0123456789abcdef") == "groups"
    assert job_route("my-route-_-0123456789abcdef-r3") == "my-route"
    assert job_route("groups-0123456789abcdef") == "groups"  # ids of older versions (no company)
    assert job_route("my-route-0123456789abcdef-r3", [Route("my-route", "m/", "package")]) == "my-route"
    assert job_route("drop-123") == "_unrouted"


def test_day_prefixes_cover_the_window() -> None:
    since = datetime(2026, 11, 30, 22, tzinfo=UTC)
    now = datetime(2026, 12, 1, 3, tzinfo=UTC)
    assert day_prefixes(since, now) == ["2026/11/30/", "2026/12/01/"]


def _overview(evil: str = "<script>alert(1)</script>") -> Overview:
    job = InflightJob(
        job_id="groups-0123456789abcdef",
        route="groups",
        file=f"{evil}.csv",
        target="package",
        sent_at="2026-11-26T01:00:00Z",
        minutes=125.0,
        polls=4,
        outcome="stuck",
        stuck=True,
        recorded_status="Executing",
        d365_status="Executing",
        record_path="state/inflight/groups-0123456789abcdef/a b.csv.status.json",
    )
    failure = Failure(
        kind="import",
        subject=f"in/{evil}",
        outcome="partially_succeeded",
        message=f"D365 said {evil}",
        at="2026-11-26T02:00:00Z",
        record_path='errors/groups/x&y "q".csv.status.json',
        d365_status="PartiallySucceeded",
        error_count=2,
        errors=[f"row {evil}"],
        summary_page_url="https://d365.example/?mi=DMFExecutionSummary",
    )
    event = EventRow(
        event_id="E1",
        business_event_id="SalesInvoicePostedBusinessEvent",
        legal_entity="usmf",
        control_number=50,
        outcome="succeeded",
        message="ok",
        attempts=1,
        created="",
        updated="",
        record_path="evstate/business-events/E1.json",
        raw_path="events/x/E1.json",
        out_of_order=True,
        high_water_mark=100,
        duplicate=True,
        duplicate_reason=evil,
    )
    return Overview(
        generated_at="2026-11-26T03:00:00Z",
        window_hours=24,
        routes=[
            RouteCounts("groups", waiting=2, in_flight=1, stuck=1, archived=5, failed=1),
            RouteCounts(evil),
        ],
        in_flight=[job],
        in_flight_total=1,
        failures=[failure],
        events=[event],
        event_counts={"received": 1, "retrying": 0, "poisoned": 2},
        problems=[f"exports: {evil}"],
    )


def test_the_page_escapes_everything_and_runs_no_script() -> None:
    page = render_page(_overview(), PageLinks("/api/operations", "k/ey+=&1"))
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'x&y "q"' not in page  # the record path only appears URL-encoded and escaped


def test_links_carry_the_function_key_and_the_record_path() -> None:
    page = render_page(_overview(), PageLinks("/api/operations", "k/ey+=&1"))
    hrefs = re.findall(r'href="([^"]*)"', page)
    code = "code=k%2Fey%2B%3D%261"
    assert f"/api/operations?{code}" in [h.replace("&amp;", "&") for h in hrefs]
    record = "/api/operations/record?path=errors%2Fgroups%2Fx%26y%20%22q%22.csv.status.json&" + code
    assert record in [h.replace("&amp;", "&") for h in hrefs]
    assert "https://d365.example/?mi=DMFExecutionSummary" in hrefs  # D365's own page, no key added
    without_key = render_page(_overview(), PageLinks("/api/operations"))
    assert "code=" not in without_key


def test_the_page_shows_counts_markers_and_empty_states() -> None:
    page = render_page(_overview(), PageLinks("/api/operations", "k"))
    assert 'data-card="Stuck"><div class="n">1</div>' in page
    assert 'data-card="Events poisoned"><div class="n">2</div>' in page
    assert "out of order" in page
    assert ">duplicate<" in page
    assert "PartiallySucceeded" in page
    empty = render_page(Overview("2026-11-26T03:00:00Z", 24), PageLinks("/api/operations", "k"))
    for text in ("Nothing in flight", "No failure in the last 24 h", "No business event", "No export stored"):
        assert text in empty


def test_the_report_lists_the_same_facts() -> None:
    text = format_overview(_overview("evil"))
    assert "STUCK groups-0123456789abcdef" in text
    assert "D365 now: Executing" in text
    assert "groups" in text
    assert "partially_succeeded" in text
    assert "[duplicate] [out of order]" in text
    assert "Problems" in text
    assert re.search(r"total\s+2\s+1\s+1\s+5\s+1", text)


def test_a_key_from_a_header_is_never_copied_into_the_page() -> None:
    page = render_page(_overview(), PageLinks("/api/operations", None, header_key=True))
    assert not [href for href in re.findall(r'href="([^"]*)"', page) if "code=" in href]
    assert "links carry no key" in page
    opened_with_code = render_page(_overview(), PageLinks("/api/operations", "k", header_key=True))
    assert "links carry no key" not in opened_with_code


def test_parts_not_gathered_are_unknown_not_zero() -> None:
    overview = _overview("evil")
    overview.unknown = ["imports", "business events"]
    page = render_page(overview, PageLinks("/api/operations"))
    assert (
        'data-card="Waiting in inbound" title="could not be gathered: see above"><div class="n">?</div>'
        in page
    )
    assert (
        'data-card="Events poisoned" title="could not be gathered: see above"><div class="n">?</div>' in page
    )
    assert "Unknown: the imports could not be gathered" in page
    assert "Failures of the imports, business events could not be gathered" in page
    text = format_overview(overview)
    assert "unknown: could not be gathered (see Problems)" in text
    assert "In-flight imports (unknown)" in text
    assert "Business events: unknown" in text
    assert overview.to_dict()["totals"] is None


def test_a_resubmitted_failure_says_so() -> None:
    overview = _overview()
    overview.failures[0].resubmitted = {
        "at": "2026-11-26T04:00:00Z",
        "to": "inbound/groups/a.csv",
        "attempt": 1,
    }
    page = render_page(overview, PageLinks("/api/operations"))
    assert "re-submitted</span>" in page
    assert "re-submitted 2026-11-26 04:00:00Z as <code>inbound/groups/a.csv</code> (attempt 1)" in page


def test_a_redelivered_event_is_marked_with_its_count_and_one_delivery_is_not() -> None:
    overview = _overview()
    [event] = overview.events
    assert "redelivered" not in render_page(overview, PageLinks("/api/operations"))
    assert "redelivered" not in format_overview(overview)
    assert overview.to_dict()["events"][0]["deliveries"] == 1
    event.deliveries, event.last_redelivered = 4, "2026-11-26T03:10:00Z"
    page = render_page(overview, PageLinks("/api/operations"))
    assert 'data-deliveries="4"' in page
    assert "redelivered ×3</span>" in page
    assert "4 deliveries of this EventId: D365 sent it again 3 time(s)" in page
    assert "last 2026-11-26 03:10:00Z" in page
    assert "[redelivered ×3: 4 deliveries]" in format_overview(overview)
    row = overview.to_dict()["events"][0]
    assert (row["deliveries"], row["last_redelivered"]) == (4, "2026-11-26T03:10:00Z")
