"""Exactly once under stress: repeated triggers, racing instances, crashes between sending and recording,
stuck jobs, token expiry, 429/5xx while uploading and polling, the app-wide ImportFromPackage lock."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
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
    assert stack.until_finished(report.job_id) == "succeeded"
    statuses = [r["status"] for r in stack.emulator.admin(
        "GET", "requests", params={"path_prefix": GET_STATUS, "limit": 100})["requests"]]  # fmt: skip
    assert statuses.count(503) == 2
    assert statuses.count(429) == 1
    assert 1.0 in stack.sleeps or any(s >= 1 for s in stack.sleeps) or statuses[-1] == 200


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
