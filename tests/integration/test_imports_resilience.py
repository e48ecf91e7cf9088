"""Exactly once under stress: repeated triggers, racing instances, crashes between sending and recording,
stuck jobs, token expiry, 429/5xx while uploading and polling, the app-wide ImportFromPackage lock."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.pipelines.imports import layout
from shared.pipelines.imports import ledger as ledger_module
from shared.pipelines.imports.intake import ImportReport
from tests.integration.test_imports_recurring import FILE_ROUTE
from tests.integration.test_imports_stack import (
    CUSTOMER_GROUPS_JOB,
    PACKAGE_ROUTE,
    FaultAdapter,
    ImportStack,
    customer_groups_csv,
    make_stack,
)

__all__ = ["make_stack"]

GET_STATUS = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetExecutionSummaryStatus"


def together(*calls: Callable[[], ImportReport]) -> list[ImportReport]:
    """Run the calls on threads released at the same moment (two instances racing)."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(index: int, call: Callable[[], ImportReport]) -> None:
        barrier.wait()
        results[index] = call()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_a_repeated_trigger_finds_the_file_handled(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="RT"))
    assert stack.run("groups/a.csv").outcome == "sent"
    assert stack.run("groups/a.csv").outcome == "gone"
    assert len(stack.executions()) == 1


def test_two_processors_on_one_file_import_it_once(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    other: ImportStack = make_stack([PACKAGE_ROUTE], **_same_containers(stack))
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="TP"))
    reports = together(lambda: stack.run("groups/a.csv"), lambda: other.run("groups/a.csv"))
    outcomes = sorted(r.outcome for r in reports)
    assert outcomes in (["busy", "sent"], ["gone", "sent"]), reports
    assert len(stack.executions()) == 1


def test_two_drops_of_the_same_content_racing_are_imported_once(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    other: ImportStack = make_stack([PACKAGE_ROUTE], **_same_containers(stack))
    data = customer_groups_csv("1", prefix="RC")
    stack.drop("groups/a.csv", data)
    stack.drop("groups/b.csv", data)
    reports = together(lambda: stack.run("groups/a.csv"), lambda: other.run("groups/b.csv"))
    assert sorted(r.outcome for r in reports) == ["duplicate", "sent"], reports
    assert len(stack.executions()) == 1


def _same_containers(stack: ImportStack) -> dict[str, str]:
    s = stack.settings
    return {
        "IMPORT_INBOUND_CONTAINER": s.inbound_container,
        "IMPORT_ARCHIVE_CONTAINER": s.archive_container,
        "IMPORT_ERRORS_CONTAINER": s.errors_container,
        "IMPORT_STATE_CONTAINER": s.state_container,
    }


class Crash(BaseException):
    """The process dying at this point (BaseException: nothing in the pipeline may swallow it)."""


def crash_when_recording_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    original = ledger_module.Ledger.set_state
    crashed: list[bool] = []

    def set_state(self: Any, name: str, state: Any, **fields: Any) -> Any:
        if state is ledger_module.LedgerState.SENT and not crashed:
            crashed.append(True)
            raise Crash
        return original(self, name, state, **fields)

    monkeypatch.setattr(ledger_module.Ledger, "set_state", set_state)


def test_crash_after_import_before_record_reattaches_instead_of_importing_again(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="CR"))
    crash_when_recording_sent(monkeypatch)
    with pytest.raises(Crash):
        stack.run("groups/a.csv")
    assert [e["state"] for e in stack.ledger()] == ["sending"]
    assert stack.names(stack.settings.inbound_container) == ["groups/a.csv"]
    assert len(stack.executions()) == 1

    again = stack.run("groups/a.csv")  # the retried trigger (or the monitor's sweep)
    assert again.outcome == "sent", again
    assert len(stack.executions()) == 1  # re-attached by the deterministic execution id
    assert again.job_id is not None
    assert stack.until_finished(again.job_id) == "succeeded"


def test_crash_before_the_import_started_sends_it_on_retry(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.pipelines.imports import intake

    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="CB"))
    original = intake.import_under_lock  # type: ignore[attr-defined]

    def crash(*args: Any, **kwargs: Any) -> str:
        monkeypatch.setattr(intake, "import_under_lock", original)
        raise Crash

    monkeypatch.setattr(intake, "import_under_lock", crash)
    with pytest.raises(Crash):
        stack.run("groups/a.csv")
    assert stack.executions() == []
    again = stack.run("groups/a.csv")
    assert again.outcome == "sent", again
    assert len(stack.executions()) == 1


def test_crash_after_enqueue_is_not_enqueued_again_but_flagged_for_an_operator(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack: ImportStack = make_stack([FILE_ROUTE])
    stack.drop("groups-file/a.csv", customer_groups_csv("1", prefix="CE"))
    crash_when_recording_sent(monkeypatch)
    with pytest.raises(Crash):
        stack.run("groups-file/a.csv")
    report = stack.run("groups-file/a.csv")
    assert (report.outcome, report.reason_code) == ("failed", "needs_operator_check"), report
    assert len(stack.messages(CUSTOMER_GROUPS_JOB)) == 1
    assert report.stored_as is not None
    record = stack.record(report.stored_as)
    assert "external identifier" in record["message"] or "a.csv#" in record["message"]
    assert [e["state"] for e in stack.ledger()] == ["uncertain"]


def test_a_job_past_the_stuck_limit_is_flagged_then_finished_when_d365_ends(
    make_stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE], IMPORT_STUCK_AFTER_MINUTES="30")
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 30})
    report = stack.run(stack.drop("groups/slow.csv", customer_groups_csv("1", prefix="ST")))
    assert report.outcome == "sent"
    assert report.job_id is not None
    assert stack.monitor().in_progress == [report.job_id]
    with caplog.at_level(logging.WARNING):
        later = stack.monitor(now=stack.later(45))
    assert later.stuck == [report.job_id]
    [line] = [r.getMessage() for r in caplog.records if "IMPORT_JOB_STUCK" in r.getMessage()]
    assert f"job_id={report.job_id} route=groups" in line
    record = stack.read(stack.settings.state_container, layout.job_name(report.job_id))
    assert b'"outcome": "stuck"' in record
    beside = f"{stack.settings.state_container}/{layout.inflight_name(report.job_id, 'slow.csv')}"
    assert stack.record(beside)["outcome"] == "stuck"  # shown next to the in-flight input too

    stack.emulator.admin("POST", f"dmf/executions/{report.job_id}/status", json={"status": "Succeeded"})
    assert stack.until_finished(report.job_id) == "succeeded"
    [stored] = [n for n in stack.names(stack.settings.archive_container) if n.endswith("slow.csv")]
    history = [h["outcome"] for h in stack.record(f"{stack.settings.archive_container}/{stored}")["history"]]
    assert "stuck" in history


def test_an_expired_token_is_refreshed_mid_flow(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    first = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="TK")))
    assert first.job_id is not None
    stack.emulator.admin("POST", "tokens/rotate-key")  # every token issued so far is now refused (401)
    second = stack.run(stack.drop("groups/b.csv", customer_groups_csv("2", prefix="TK")))
    assert second.outcome == "sent", second
    stack.emulator.admin("POST", "tokens/rotate-key")
    assert second.job_id is not None
    assert stack.until_finished(first.job_id) == "succeeded"
    assert stack.until_finished(second.job_id) == "succeeded"
    refused = stack.emulator.admin("GET", "requests", params={"status": 401, "limit": 100})["requests"]
    assert len(refused) >= 2


def test_429_and_503_while_uploading_the_package_are_retried(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    faults = [
        FaultAdapter(503, 2, match=lambda r: r.method == "PUT"),
    ]
    stack.context.transport.session.mount(f"{stack.azurite.blob_endpoint}/dmf/", faults[0])
    report = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="UP")))
    assert report.outcome == "sent", report
    throttle = FaultAdapter(429, 1, match=lambda r: r.method == "PUT")
    stack.context.transport.session.mount(f"{stack.azurite.blob_endpoint}/dmf/", throttle)
    again = stack.run(stack.drop("groups/b.csv", customer_groups_csv("2", prefix="UP")))
    assert again.outcome == "sent", again
    assert len(faults[0].faulted) == 2
    assert len(throttle.faulted) == 1
    assert "sig=" in faults[0].faulted[0]  # it was the SAS upload that failed
    assert report.job_id
    assert again.job_id
    assert stack.until_finished(report.job_id) == stack.until_finished(again.job_id) == "succeeded"


def test_429_and_503_while_polling_the_status_are_retried(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    report = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="PO")))
    assert report.job_id is not None
    rules = [
        {"id": "busy", "family": "odata", "path_prefix": GET_STATUS, "error_rate": 1, "error_status": 503,
         "count": 2},
        {"id": "throttled", "family": "odata", "path_prefix": GET_STATUS, "error_rate": 1,
         "error_status": 429, "retry_after": 1, "count": 1},
    ]  # fmt: skip
    stack.emulator.admin("PUT", "faults", json={"rules": rules})
    before = stack.context.transport.stats.snapshot()
    assert stack.until_finished(report.job_id) == "succeeded"
    statuses = [r["status"] for r in stack.emulator.admin(
        "GET", "requests", params={"path_prefix": GET_STATUS, "limit": 100})["requests"]]  # fmt: skip
    assert statuses.count(503) == 2
    assert statuses.count(429) == 1
    after = stack.context.transport.stats.snapshot()
    assert after["throttled_seconds"] - before["throttled_seconds"] >= 1.0  # the 429's Retry-After: 1


def test_import_from_package_never_runs_in_parallel_across_instances(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    other: ImportStack = make_stack([PACKAGE_ROUTE], **_same_containers(stack))
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.3})
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="PA"))
    stack.drop("groups/b.csv", customer_groups_csv("2", prefix="PA"))
    reports = together(lambda: stack.run("groups/a.csv"), lambda: other.run("groups/b.csv"))
    assert [r.outcome for r in reports] == ["sent", "sent"], reports
    runs = sorted(stack.executions(), key=lambda e: e["created"])
    assert len(runs) == 2
    first_done = datetime.fromisoformat(runs[0]["completed"].replace("Z", "+00:00"))
    second_created = datetime.fromisoformat(runs[1]["created"].replace("Z", "+00:00"))
    assert second_created >= first_done  # the second waited for the first to end (IMPORT_SERIALIZE)


def test_a_busy_import_lock_defers_the_file_and_the_sweep_sends_it_later(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE], IMPORT_LOCK_WAIT_SECONDS="0.5")
    stack.drop("groups/a.csv", customer_groups_csv("1", prefix="DF"))
    with stack.context.store.lease(stack.settings.state_container, layout.IMPORT_LOCK, seconds=15):
        deferred = stack.run("groups/a.csv")
    assert (deferred.outcome, deferred.reason_code) == ("deferred", "import_lock_busy"), deferred
    assert stack.names(stack.settings.inbound_container) == ["groups/a.csv"]
    assert [e["state"] for e in stack.ledger()] == ["not_sent"]
    swept = stack.monitor()  # IMPORT_RETRY_AFTER_MINUTES=0 in these tests: every inbound file is due
    assert [s["outcome"] for s in swept.swept] == ["sent"]
    assert len(stack.executions()) == 1


def test_a_job_whose_in_flight_copy_vanished_still_ends_with_its_record(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    report = stack.run(stack.drop("groups/gone.csv", customer_groups_csv("1", prefix="GN")))
    assert report.job_id is not None
    name = layout.inflight_name(report.job_id, "gone.csv")
    stack.service.get_blob_client(stack.settings.state_container, name).delete_blob()  # an operator's slip
    assert stack.until_finished(report.job_id) == "succeeded"
    [stored] = stack.names(stack.settings.archive_container)
    assert stored.endswith("gone.csv.status.json")
    assert (
        "was missing"
        in stack.record(f"{stack.settings.archive_container}/{stored[: -len('.status.json')]}")["message"]
    )


IMPORT_FROM_PACKAGE = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.ImportFromPackage"


def test_a_lost_import_answer_is_never_imported_again_from_another_drop(make_stack) -> None:
    """ImportFromPackage runs in D365 but its answer is cut and the status row shows only later (ref §1.7):
    the entry stays ``sending``, another drop of the content is a duplicate, and the retries of this drop
    ask D365 until the job shows up and then follow it, never starting a second execution."""
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 3})
    rule = {"id": "cut", "family": "odata", "path_prefix": IMPORT_FROM_PACKAGE, "drop_rate": 1,
            "drop_mode": "mid_body", "count": 1}  # fmt: skip
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})
    data = customer_groups_csv("1", prefix="LOST")
    first = stack.run(stack.drop("groups/a.csv", data))
    assert (first.outcome, first.reason_code) == ("deferred", "import_unconfirmed"), first
    assert [e["state"] for e in stack.ledger()] == ["sending"]
    assert stack.names(stack.settings.inbound_container) == ["groups/a.csv"]

    other = stack.run(stack.drop("groups/b.csv", data))  # the same content again (e.g. a re-send)
    assert other.outcome == "duplicate", other
    retries = [stack.run("groups/a.csv") for _ in range(3)]  # the sweep's later attempts
    assert [r.outcome for r in retries] == ["deferred", "deferred", "sent"], retries
    assert retries[-1].job_id == first.job_id
    assert len(stack.executions()) == 1
    assert stack.until_finished(first.job_id or "") == "succeeded"


def test_a_500_from_import_from_package_is_unconfirmed_not_refused(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    rule = {"id": "boom", "family": "odata", "path_prefix": IMPORT_FROM_PACKAGE, "error_rate": 1,
            "error_status": 500, "count": 1}  # fmt: skip
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})
    first = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="FH")))
    assert (first.outcome, first.reason_code) == ("deferred", "import_unconfirmed"), first
    assert stack.names(stack.settings.errors_container) == []
    retries = [stack.run("groups/a.csv") for _ in range(4)]
    sent = [r for r in retries if r.outcome == "sent"]
    assert [r.job_id for r in sent] == [first.job_id], retries
    assert len(stack.executions()) == 1


def test_the_monitor_never_finishes_a_job_whose_input_is_still_being_moved(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D365 finishes while the intake still copies a (big) input to in-flight: the job is finished on a
    later monitor run, with its input, instead of leaving the input stranded in ``inflight/``."""
    from shared.pipelines.imports import outcome as outcome_module
    from shared.pipelines.imports.monitor import poll_import_job

    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    original = outcome_module.Outcomes.move
    polled: list[dict[str, str]] = []

    def slow_move(self: Any, source: Any, target: Any, *, lease: Any = None) -> None:
        if target.name.startswith("inflight/") and not polled:
            job = target.name.split("/")[1]
            deadline = time.monotonic() + 20  # meanwhile D365 ends the job and the monitor looks at it
            while time.monotonic() < deadline and [e["status"] for e in stack.executions()] != ["Succeeded"]:
                time.sleep(0.05)
            polled.append(poll_import_job(stack.context, job, settings=stack.settings).finished)
        original(self, source, target, lease=lease)

    monkeypatch.setattr(outcome_module.Outcomes, "move", slow_move)
    report = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="RACE")))
    assert report.outcome == "sent", report
    assert polled == [{}], polled  # D365 was done, but the input was not in-flight yet
    assert report.job_id is not None
    assert stack.until_finished(report.job_id) == "succeeded"
    assert stack.names(stack.settings.state_container, "inflight/") == []
    assert stack.jobs() == []
    archived = stack.names(stack.settings.archive_container)
    assert [n for n in archived if n.endswith("/a.csv")], archived
    stored = next(n for n in archived if n.endswith("/a.csv"))
    assert "missing" not in stack.record(f"{stack.settings.archive_container}/{stored}")["message"]


def test_an_older_generation_finishing_leaves_the_re_import_s_ledger_state_alone(make_stack) -> None:
    stack: ImportStack = make_stack([{**PACKAGE_ROUTE, "on_redrop": "reimport"}])
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.2})
    data = customer_groups_csv("1", prefix="GEN")
    one = stack.run(stack.drop("groups/a.csv", data))
    two = stack.run(stack.drop("groups/b.csv", data))
    assert (one.outcome, two.outcome) == ("sent", "sent"), (one, two)
    assert two.job_id == f"{one.job_id}-r2"
    assert one.job_id is not None
    assert stack.until_finished(one.job_id) == "succeeded"
    [entry] = stack.ledger()
    assert (entry["job_id"], entry["state"]) == (two.job_id, "sent")  # still generation 2's
    assert two.job_id is not None
    assert stack.until_finished(two.job_id) == "succeeded"
    [entry] = stack.ledger()
    assert (entry["job_id"], entry["state"]) == (two.job_id, "succeeded")


@pytest.mark.parametrize("route", [PACKAGE_ROUTE, FILE_ROUTE], ids=["package", "recurring"])
def test_a_lapsed_input_lease_stops_the_send(
    make_stack, monkeypatch: pytest.MonkeyPatch, route: dict[str, Any]
) -> None:
    """Preparing took longer than the lease and its renewals failed; another instance took the file. The
    first instance must not send it too: it checks its lease right before the irreversible call."""
    from azure.storage.blob import BlobLeaseClient

    from shared.pipelines.imports import intake

    stack: ImportStack = make_stack([route])
    name = stack.drop(f"{route['name']}/a.csv", customer_groups_csv("1", prefix="LL"))
    blob = stack.service.get_blob_client(stack.settings.inbound_container, name)
    original = intake.prepare  # type: ignore[attr-defined]
    taken: list[BlobLeaseClient] = []

    def prepare_then_lose_the_lease(*args: Any, **kwargs: Any) -> Any:
        prepared = original(*args, **kwargs)
        BlobLeaseClient(blob).break_lease(lease_break_period=0)  # what a lapsed lease amounts to
        taken.append(BlobLeaseClient(blob))
        taken[0].acquire(lease_duration=15)  # another instance now processes the file
        return prepared

    monkeypatch.setattr(intake, "prepare", prepare_then_lose_the_lease)
    report = stack.run(name)
    assert (report.outcome, report.reason_code) == ("deferred", "input_lease_lost"), report
    assert stack.executions() == []
    assert stack.messages(CUSTOMER_GROUPS_JOB) == []
    assert [e["state"] for e in stack.ledger()] == ["not_sent"]  # nothing left: whoever holds it sends it
    assert stack.names(stack.settings.inbound_container) == [name]
    taken[0].release()
    monkeypatch.setattr(intake, "prepare", original)
    again = stack.run(name)
    assert again.outcome == "sent", again
    if route is PACKAGE_ROUTE:
        assert len(stack.executions()) == 1
    else:
        assert len(stack.messages(CUSTOMER_GROUPS_JOB)) == 1


def test_a_transient_error_renewing_the_input_lease_does_not_stop_the_send(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One connection blip on the renewal right before enqueueing says nothing about the lease: retried."""
    from azure.core.exceptions import ServiceRequestError

    from shared.pipelines.imports import intake

    stack: ImportStack = make_stack([FILE_ROUTE])
    name = stack.drop("groups-file/a.csv", customer_groups_csv("1", prefix="TB"))
    original = intake._Intake.confirm_lease
    blips = [ServiceRequestError("connection reset")]

    def blip_once(self: Any) -> None:
        real = self.lease.renew

        def renew() -> None:
            if blips:
                raise blips.pop()
            real()

        self.lease.renew = renew
        original(self)

    monkeypatch.setattr(intake._Intake, "confirm_lease", blip_once)
    report = stack.run(name)
    assert report.outcome == "sent", report
    assert blips == []
    assert len(stack.messages(CUSTOMER_GROUPS_JOB)) == 1
    assert [e["state"] for e in stack.ledger()] == ["sent"]


def test_the_next_package_import_waits_while_the_previous_one_is_not_visible_yet(make_stack) -> None:
    """GetExecutionSummaryStatus answers 400 "not found" right after an import starts (ref §1.7): with
    IMPORT_SERIALIZE=execution that is "still running", not "ended", so the next import waits for it."""
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.3, "status_not_found_polls": 2})
    first = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="NV")))
    second = stack.run(stack.drop("groups/b.csv", customer_groups_csv("2", prefix="NV")))
    assert (first.outcome, second.outcome) == ("sent", "sent"), (first, second)
    runs = sorted(stack.executions(), key=lambda e: e["created"])
    assert len(runs) == 2
    first_done = datetime.fromisoformat(runs[0]["completed"].replace("Z", "+00:00"))
    assert datetime.fromisoformat(runs[1]["created"].replace("Z", "+00:00")) >= first_done


def test_a_file_deferred_too_often_goes_to_errors_and_can_be_resubmitted(make_stack) -> None:
    from shared.pipelines.imports.resubmit import resubmit_import

    stack: ImportStack = make_stack(
        [PACKAGE_ROUTE],
        IMPORT_LOCK_WAIT_SECONDS="0.2",
        IMPORT_MAX_DEFERRALS="3",
        IMPORT_MAX_DEFERRAL_HOURS="0",
    )
    state = stack.settings.state_container
    name = stack.drop("groups/a.csv", customer_groups_csv("1", prefix="DT"))
    waiting = f"deferred/{stack.settings.inbound_container}/{name}.status.json"
    with stack.context.store.lease(state, layout.IMPORT_LOCK, seconds=15):
        reports = [stack.run(name) for _ in range(2)]
        assert [(r.outcome, r.reason_code) for r in reports] == [("deferred", "import_lock_busy")] * 2
        record = json.loads(stack.read(state, waiting))  # why the file is still in inbound
        assert record["outcome"] == "received"
        assert (record["details"]["attempts"], record["details"]["reason_code"]) == (2, "import_lock_busy")
        last = stack.run(name)
    assert (last.outcome, last.reason_code) == ("failed", "deferred_too_often"), last
    assert last.stored_as is not None
    assert f"python -m ops resubmit {last.stored_as}.status.json" in last.message
    assert stack.names(stack.settings.inbound_container) == []
    assert waiting not in stack.names(state)
    [entry] = stack.ledger()
    assert (entry["state"], entry["stored_as"]) == ("not_sent", last.stored_as)
    assert stack.executions() == []

    assert resubmit_import(stack.context, last.stored_as, settings=stack.settings).outcome == "resubmitted"
    again = stack.run(name)
    assert again.outcome == "sent", again
    assert len(stack.executions()) == 1


def test_a_deferred_file_is_retried_a_retry_interval_apart_and_given_up_by_time(make_stack) -> None:
    """Monitor runs come every few minutes; a file waiting behind a long import (or a D365 outage) is tried
    again only IMPORT_RETRY_AFTER_MINUTES after its last attempt, and goes to errors by time, not by runs."""
    stack: ImportStack = make_stack(
        [PACKAGE_ROUTE],
        IMPORT_LOCK_WAIT_SECONDS="0.2",
        IMPORT_RETRY_AFTER_MINUTES="10",
        IMPORT_MAX_DEFERRALS="2",
        IMPORT_MAX_DEFERRAL_HOURS="1",
    )
    state, inbound = stack.settings.state_container, stack.settings.inbound_container
    name = stack.drop("groups/a.csv", customer_groups_csv("1", prefix="DS"))
    waiting = f"deferred/{inbound}/{name}.status.json"

    def attempts() -> int:
        return int(json.loads(stack.read(state, waiting))["details"]["attempts"])

    start = datetime.now(UTC)
    with stack.context.store.lease(state, layout.IMPORT_LOCK, seconds=60):  # one long import holds the lock
        assert stack.run(name).reason_code == "import_lock_busy"
        for minutes, expected in ((11, 2), (15, 2), (19, 2), (22, 3)):  # runs 4 minutes apart
            stack.monitor(now=start + timedelta(minutes=minutes))
            assert attempts() == expected, minutes
        assert stack.names(inbound) == [name]  # the attempt floor is reached, the hour is not
        last = stack.monitor(now=start + timedelta(minutes=62))
    [swept] = last.swept
    assert (swept["outcome"], swept["reason_code"]) == ("failed", "deferred_too_often"), swept
    assert stack.names(inbound) == []
    assert stack.executions() == []


def test_an_unconfirmed_import_deferred_too_often_is_flagged_uncertain(make_stack) -> None:
    stack: ImportStack = make_stack(
        [PACKAGE_ROUTE],
        IMPORT_MAX_DEFERRALS="2",
        IMPORT_MAX_DEFERRAL_HOURS="0",
        IMPORT_UNKNOWN_STATUS_POLLS="5",
    )
    rule = {"id": "cut", "family": "odata", "path_prefix": IMPORT_FROM_PACKAGE, "drop_rate": 1,
            "drop_mode": "mid_body", "count": 1}  # fmt: skip
    stack.emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 10})
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})
    name = stack.drop("groups/a.csv", customer_groups_csv("1", prefix="UU"))
    first, last = stack.run(name), stack.run(name)
    assert (first.outcome, first.reason_code) == ("deferred", "import_unconfirmed"), first
    assert (last.outcome, last.reason_code) == ("failed", "deferred_too_often"), last
    assert f"D365 may have job {first.job_id}" in last.message
    [entry] = stack.ledger()
    assert entry["state"] == "uncertain"  # not sent again by any drop until an operator checked
    assert len(stack.executions()) == 1


def test_an_unconfirmed_import_stays_sending_when_its_resend_is_deferred(make_stack) -> None:
    """The checks for an unconfirmed ImportFromPackage ran out; the re-send (same execution id) meets the
    busy import lock. D365 may still have the first job: no other drop may take the entry over (that would
    be a new generation with a new execution id, a double import)."""
    stack: ImportStack = make_stack(
        [PACKAGE_ROUTE], IMPORT_LOCK_WAIT_SECONDS="0.2", IMPORT_UNKNOWN_STATUS_POLLS="1"
    )
    rule = {"id": "cut", "family": "odata", "path_prefix": IMPORT_FROM_PACKAGE, "drop_rate": 1,
            "drop_mode": "mid_body", "count": 1}  # fmt: skip
    stack.emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 50})
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})
    data = customer_groups_csv("1", prefix="UD")
    name = stack.drop("groups/a.csv", data)
    assert stack.run(name).reason_code == "import_unconfirmed"
    assert stack.run(name).reason_code == "import_unconfirmed"  # the one check: D365 does not show it yet
    with stack.context.store.lease(stack.settings.state_container, layout.IMPORT_LOCK, seconds=15):
        resend = stack.run(name)
    assert (resend.outcome, resend.reason_code) == ("deferred", "import_lock_busy"), resend
    [entry] = stack.ledger()
    assert entry["state"] == "sending", entry
    other = stack.run(stack.drop("groups/b.csv", data))
    assert other.outcome == "duplicate", other
    assert len(stack.executions()) == 1


def test_a_failed_upload_is_reported_while_the_build_still_reads_the_input(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload failed and its wait for the build thread ran out while that thread was still reading the
    input: closing the reader then must not hide the real error (``upload_failed``) behind a ValueError."""
    from shared.pipelines.imports import preparing
    from shared.pipelines.imports.send import Deferred
    from shared.pipelines.imports.streams import blob_chunks

    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    name = stack.drop("groups/a.csv", customer_groups_csv("1", prefix="UF"))
    reading, release = threading.Event(), threading.Event()

    def slow_chunks(*args: Any, **kwargs: Any) -> Any:
        for chunk in blob_chunks(*args, **kwargs):
            reading.set()
            release.wait(10)  # the build thread is inside the input's generator
            yield chunk

    def upload_fails_while_the_build_reads(*args: Any) -> Any:
        reader = args[-1]
        threading.Thread(target=reader.read, args=(1,), daemon=True).start()  # the build thread
        assert reading.wait(10)
        raise Deferred("upload_failed", "uploading the package failed")

    monkeypatch.setattr(preparing, "blob_chunks", slow_chunks)
    monkeypatch.setattr(preparing, "_prepare", upload_fails_while_the_build_reads)
    try:
        report = stack.run(name)
    finally:
        release.set()
    assert (report.outcome, report.reason_code) == ("deferred", "upload_failed"), report
    assert stack.names(stack.settings.inbound_container) == [name]


def test_redrops_waiting_behind_another_drop_give_up_into_their_own_folders(make_stack) -> None:
    """Two re-drops (same content, same file name, different folders) wait behind a drop whose import is
    unconfirmed; when both give up, each keeps its own errors location and status record."""
    route = {**PACKAGE_ROUTE, "on_redrop": "reimport"}
    stack: ImportStack = make_stack(
        [route], IMPORT_MAX_DEFERRALS="2", IMPORT_MAX_DEFERRAL_HOURS="0", IMPORT_UNKNOWN_STATUS_POLLS="5"
    )
    rule = {"id": "cut", "family": "odata", "path_prefix": IMPORT_FROM_PACKAGE, "drop_rate": 1,
            "drop_mode": "mid_body", "count": 1}  # fmt: skip
    stack.emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 50})
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})
    data = customer_groups_csv("1", prefix="CF")
    assert stack.run(stack.drop("groups/first.csv", data)).reason_code == "import_unconfirmed"
    names = [stack.drop("groups/x/a.csv", data), stack.drop("groups/y/a.csv", data)]
    reports = [stack.run(name) for name in names for _ in range(2)][1::2]
    assert [(r.outcome, r.reason_code) for r in reports] == [("failed", "deferred_too_often")] * 2, reports
    stored = [str(r.stored_as) for r in reports]
    assert stored[0] != stored[1]
    errors = stack.names(stack.settings.errors_container)
    for place, name in zip(stored, names, strict=True):
        container, _, blob = place.partition("/")
        assert blob in errors
        record = json.loads(stack.read(container, f"{blob}.status.json"))
        assert record["subject"].endswith(name), record


def test_a_drop_whose_generation_was_taken_over_is_not_sent_again(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Drop A was sent, but its intake stopped before moving the input to in-flight; drop B re-imported
    the content (generation 2). A's retry must join its own job, never send a generation 3."""
    from shared.pipelines.imports.outcome import Outcomes

    route = {**PACKAGE_ROUTE, "on_redrop": "reimport"}
    stack: ImportStack = make_stack([route])
    data = customer_groups_csv("1", prefix="TO")
    first = stack.drop("groups/a.csv", data)
    real_move = Outcomes.move

    def stop_before_inflight(self: Outcomes, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the instance stopped")

    monkeypatch.setattr(Outcomes, "move", stop_before_inflight)
    with pytest.raises(RuntimeError):
        stack.run(first)
    monkeypatch.setattr(Outcomes, "move", real_move)
    assert stack.run(stack.drop("groups/b.csv", data)).outcome == "sent"
    again = stack.run(first)
    assert again.outcome == "sent", again
    assert len(stack.executions()) == 2
    assert stack.names(stack.settings.inbound_container) == []
    [entry] = stack.ledger()
    assert entry["generation"] == 2


def test_a_taken_over_drop_sent_without_a_job_record_goes_to_an_operator(
    make_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.pipelines.imports.ledger import JobRecords

    route = {**PACKAGE_ROUTE, "on_redrop": "reimport"}
    stack: ImportStack = make_stack([route])
    data = customer_groups_csv("1", prefix="TJ")
    first = stack.drop("groups/a.csv", data)
    real_create = JobRecords.create

    def stop_before_the_job_record(self: JobRecords, *args: Any) -> bool:
        raise RuntimeError("the instance stopped")

    monkeypatch.setattr(JobRecords, "create", stop_before_the_job_record)
    with pytest.raises(RuntimeError):
        stack.run(first)
    monkeypatch.setattr(JobRecords, "create", real_create)
    assert stack.run(stack.drop("groups/b.csv", data)).outcome == "sent"
    again = stack.run(first)
    assert (again.outcome, again.reason_code) == ("failed", "needs_operator_check"), again
    assert len(stack.executions()) == 2
    assert stack.names(stack.settings.inbound_container) == []


def test_a_redrop_of_content_whose_import_failed_points_to_resubmit(make_stack) -> None:
    route = {**PACKAGE_ROUTE, "name": "customers", "definition_group": "Imports-Customers",
             "entities": [{"entity": "Customers V3", "file_pattern": "*.csv"}]}  # fmt: skip
    stack: ImportStack = make_stack([route])
    rows = "CUSTOMERACCOUNT,ORGANIZATIONNAME,CUSTOMERGROUPID,SALESCURRENCYCODE\nRS-1,Unknown group,NOPE,USD\n"
    first = stack.run(stack.drop("customers/a.csv", rows.encode()))
    assert first.job_id is not None
    assert stack.until_finished(first.job_id) != "succeeded"
    [entry] = stack.ledger()
    assert entry["state"] == "failed"
    again = stack.run(stack.drop("customers/b.csv", rows.encode()))
    assert again.outcome == "duplicate", again
    assert f"python -m ops resubmit {entry['stored_as']}.status.json" in again.message


def test_an_abandoned_streamed_input_leaves_no_hashing_thread_behind(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    write_url = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetAzureWriteUrl"
    rule = {"id": "url", "family": "odata", "path_prefix": write_url, "error_rate": 1, "error_status": 400}
    stack.emulator.admin("PUT", "faults", json={"rules": [rule]})

    def hashing() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "import-sha256")

    before = hashing()
    report = stack.run(stack.drop("groups/a.csv", customer_groups_csv("1", prefix="HT")))
    assert (report.outcome, report.reason_code) == ("deferred", "upload_failed"), report
    assert hashing() == before
