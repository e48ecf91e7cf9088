"""Crash recovery of populate routes against the real stack.

A crash is the process dying after D365 answered and before the outcome was recorded. It is injected at a
seam of the pipeline (a storage write, or the next D365 call, raising ``Crash``), which leaves the input,
the ledger entry and D365 exactly as a dying process would; then the same drop is triggered again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared.context import AppContext
from shared.d365.batch import BatchRequest, BatchResult
from shared.d365.odata import ODataClient
from shared.pipelines.imports import ImportSettings
from shared.pipelines.imports.ledger import Ledger
from shared.pipelines.imports.outcome import Outcomes
from shared.pipelines.imports.resubmit import resubmit_import
from shared.settings import Settings
from tests.integration import test_imports_resilience as resilience
from tests.integration.test_imports_recurring import FILE_ROUTE
from tests.integration.test_imports_stack import ImportStack, customer_groups_csv, stack_env
from tests.integration.test_ops_cli import run_ops
from tests.integration.test_populate_odata import CUSTOMERS, by_record, route
from tests.integration.test_populate_service import PATH, PER_RECORD, contact
from tests.support.d365 import logged
from tests.support.stack import AzuriteInfo, EmulatorInfo


class Crash(BaseException):
    """Stands for the process dying at this point (BaseException: nothing in the pipeline may swallow it)."""


Stack = tuple[ImportStack, dict[str, str]]


@pytest.fixture
def make_stack(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Callable[..., Stack]]:
    """``make_stack(routes)``: an ImportStack (own containers, reset emulator) and its settings."""
    made: list[ImportStack] = []

    def make(routes: list[dict[str, Any]]) -> Stack:
        env = stack_env(clean_emulator, azurite, IMPORT_ROUTES=json.dumps(routes))
        context = AppContext.from_settings(Settings.from_env(env))
        settings = context.settings.section(ImportSettings)
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        made.append(ImportStack(context, settings, clean_emulator, azurite, service))
        return made[-1], env

    yield make
    for stack in made:
        stack.context.close()
        stack.service.close()


def crash_once(monkeypatch: pytest.MonkeyPatch, owner: type, method: str) -> None:
    """``owner.method`` raises ``Crash`` instead of doing its work the first time it is called."""
    real = getattr(owner, method)
    crashed: list[bool] = []

    def once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if crashed:
            return real(self, *args, **kwargs)
        crashed.append(True)
        raise Crash(f"{owner.__name__}.{method}")

    monkeypatch.setattr(owner, method, once)


def crash_after_first_write_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process dies right after D365 answered the run's first write ``$batch``."""
    real = ODataClient.execute_batch
    crashed: list[bool] = []

    def execute(self: ODataClient, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        answer = real(self, batch, timeout=timeout)
        if not batch.read_only and not crashed:
            crashed.append(True)
            raise Crash("after the first write $batch")
        return answer

    monkeypatch.setattr(ODataClient, "execute_batch", execute)


def customers(stack: ImportStack) -> list[str]:
    rows = stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'K-*'"})
    return sorted(r["CustomerAccount"] for r in rows)


def writes(stack: ImportStack) -> int:
    return len(logged(stack.emulator, "/data/$batch"))


def test_odata_run_interrupted_after_some_writes_is_finished_without_creating_twice(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, _ = make_stack([route(CUSTOMERS, changeset_size=2)])
    payload = [{"CustomerAccount": f"K-{n}", "CustomerGroupId": "10"} for n in range(1, 5)]
    payload[3]["CustomerGroupId"] = "ZZ"  # D365 refuses record 4: its changeset [3, 4] is rolled back
    name = stack.drop("customers/k.json", json.dumps(payload).encode())
    crash_after_first_write_batch(monkeypatch)
    with pytest.raises(Crash):
        stack.run(name)
    # what the dead process left: records 1-2 in D365, 3 not (its re-send never went), nothing recorded
    assert customers(stack) == ["K-1", "K-2"]
    [entry] = stack.ledger()
    assert entry["state"] == "sending"
    assert stack.names(stack.settings.inbound_container) == [name]
    assert not stack.names(stack.settings.archive_container) + stack.names(stack.settings.errors_container)

    report = stack.run(name)  # the trigger again (the blob trigger retries; the monitor's sweep too)
    assert (report.outcome, report.job_id) == ("partially_succeeded", entry["job_id"]), report
    status = stack.record(str(report.stored_as))
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3, 4)] == ["unchanged", "unchanged", "created", "failed"]
    assert "not found in the relating table" in records[4]["error"]
    assert "interrupted attempt" in status["details"]["recovered"]
    assert status["details"]["populate"]["counts"]["created"] == 1
    assert customers(stack) == ["K-1", "K-2", "K-3"]  # each once: every record was read by key first
    [entry] = stack.ledger()
    assert (entry["state"], entry["generation"], entry["stored_as"]) == ("failed", 1, report.stored_as)
    assert not stack.names(stack.settings.inbound_container)


def test_odata_run_interrupted_while_recording_its_outcome_is_completed(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, _ = make_stack([route(CUSTOMERS)])
    payload = [{"CustomerAccount": f"K-{n}", "CustomerGroupId": "10"} for n in (1, 2)]
    name = stack.drop("customers/r.json", json.dumps(payload).encode())
    crash_once(monkeypatch, Outcomes, "write_record")  # D365 answered, the status record never written
    with pytest.raises(Crash):
        stack.run(name)
    assert customers(stack) == ["K-1", "K-2"]
    crash_once(monkeypatch, Outcomes, "move")  # record and ledger written, the input not moved yet
    with pytest.raises(Crash):
        stack.run(name)
    [entry] = stack.ledger()
    assert entry["state"] == "succeeded"
    assert stack.names(stack.settings.inbound_container) == [name]
    before = writes(stack)

    report = stack.run(name)  # finds the entry finished and completes the move beside its record
    assert (report.outcome, report.stored_as) == ("succeeded", entry["stored_as"]), report
    assert "interrupted move" in report.message
    assert writes(stack) == before  # nothing was sent to D365 again
    status = stack.record(str(report.stored_as))
    assert [r["outcome"] for r in status["details"]["populate"]["records"]] == ["unchanged", "unchanged"]
    assert "recovered" in status["details"]
    assert stack.names(stack.settings.archive_container) == [
        entry["stored_as"].partition("/")[2],
        entry["stored_as"].partition("/")[2] + ".status.json",
    ]
    assert not stack.names(stack.settings.inbound_container)
    # the ledger was not left "sending": the same content dropped again is written again (not deferred)
    stack.drop(name, json.dumps(payload).encode())
    assert stack.run(name).outcome == "succeeded"
    assert customers(stack) == ["K-1", "K-2"]


def test_service_run_interrupted_needs_an_operator_and_is_resubmitted_once(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack, env = make_stack([PER_RECORD])
    lines = [{"ContactId": "s-1", "Name": "Sue"}, {"ContactId": "s-2", "Name": "Sam"}]
    name = stack.drop("contacts/s.ndjson", "\n".join(json.dumps(x) for x in lines).encode())

    def calls() -> int:
        return [r["method"] for r in logged(stack.emulator, f"{PATH}/upsertContact")].count("POST")

    crash_once(monkeypatch, Outcomes, "write_record")  # the service ran; its outcome was never recorded
    with pytest.raises(Crash):
        stack.run(name)
    assert calls() == 2
    assert contact(stack, "S-2") is not None

    report = stack.run(name)  # the trigger again: the service is not called again
    assert (report.outcome, report.reason_code) == ("failed", "needs_operator_check"), report
    failed = str(report.stored_as)
    assert failed.startswith(f"{stack.settings.errors_container}/contacts/")
    status = stack.record(failed)
    assert f"python -m ops resubmit {failed}.status.json" in status["message"]
    [entry] = stack.ledger()
    assert (entry["state"], entry["stored_as"]) == ("uncertain", failed)
    assert stack.run(name).outcome == "gone"
    assert calls() == 2

    # the operator checked D365 and runs the command the message names
    first = run_ops(env, tmp_path, "resubmit", f"{failed}.status.json", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout)["outcome"] == "resubmitted"
    assert stack.names(stack.settings.inbound_container) == [name]
    again = run_ops(env, tmp_path, "resubmit", f"{failed}.status.json", "--json")
    assert json.loads(again.stdout)["outcome"] == "already_resubmitted"

    report = stack.run(name)
    assert (report.outcome, report.job_id) == ("succeeded", f"{entry['job_id']}-r2"), report
    assert [r["outcome"] for r in stack.record(str(report.stored_as))["details"]["populate"]["records"]] == [
        "unchanged",
        "unchanged",
    ]  # the service's own answer: it had both from the interrupted run
    assert calls() == 4  # sent again exactly once
    assert stack.run(name).outcome == "gone"
    assert calls() == 4
    [entry] = stack.ledger()
    assert (entry["state"], entry["generation"], entry["resubmissions"]) == ("succeeded", 2, 1)
    assert entry["resubmission_of"]["source"] == failed


def test_service_run_interrupted_after_its_status_record_is_finished_from_that_record(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, _ = make_stack([PER_RECORD])
    name = stack.drop("contacts/t.json", json.dumps([{"ContactId": "t-1", "Name": "Tom"}]).encode())
    crash_once(monkeypatch, Ledger, "set_state")  # the status record is written, the ledger is not
    with pytest.raises(Crash):
        stack.run(name)
    [entry] = stack.ledger()
    assert entry["state"] == "sending"
    report = stack.run(name)
    assert (report.outcome, report.reason_code) == ("succeeded", "written"), report
    assert "recorded before the app stopped" in report.message
    assert [r["method"] for r in logged(stack.emulator, f"{PATH}/upsertContact")].count("POST") == 1
    assert by_record(stack.record(str(report.stored_as)))[1]["outcome"] == "created"
    [entry] = stack.ledger()
    assert (entry["state"], entry["stored_as"]) == ("succeeded", report.stored_as)
    assert not stack.names(stack.settings.inbound_container)
    assert not stack.names(stack.settings.errors_container)


def test_an_interrupted_recurring_enqueue_names_the_resubmit_command(
    make_stack: Callable[..., Stack], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same operator path for the intake's own needs_operator_check (a re-drop would be a duplicate)."""
    stack, _ = make_stack([FILE_ROUTE])
    name = stack.drop("groups-file/a.csv", customer_groups_csv("1", prefix="RS"))
    resilience.crash_when_recording_sent(monkeypatch)
    with pytest.raises(resilience.Crash):
        stack.run(name)
    report = stack.run(name)
    assert (report.outcome, report.reason_code) == ("failed", "needs_operator_check"), report
    command = f"python -m ops resubmit {report.stored_as}.status.json"
    assert command in stack.record(str(report.stored_as))["message"]
    done = resubmit_import(stack.context, command.rsplit(" ", 1)[1], settings=stack.settings)
    assert done.outcome == "resubmitted"
    assert stack.names(stack.settings.inbound_container) == [name]
