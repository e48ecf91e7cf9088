"""DMF package export against the real emulator (package API, its ``dmf`` container in Azurite) and real
Azurite: one export per job and period, re-attached to by retried runs, failures kept with D365's errors."""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any

import pytest

from shared.context import AppContext
from shared.d365.dmf import DmfClient
from shared.pipelines.exports import ExportSettings, RunBudget, RunReport, run_dmf_export
from shared.settings import Settings
from tests.support.app_env import stack_env
from tests.support.d365 import faults, limits
from tests.support.stack import AzuriteInfo, EmulatorInfo

PROJECT = "Customers-Export"  # the emulator's seeded export data project
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
EXECUTION = "customers-20260310T0000Z"
ACTION = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."


class SimulatedCrash(BaseException):
    pass


@dataclass
class Stack:
    emulator: EmulatorInfo
    context: AppContext

    @property
    def settings(self) -> ExportSettings:
        return self.context.settings.section(ExportSettings)

    def run(self, now: datetime = NOW, *, budget: RunBudget | None = None, **kwargs: Any) -> RunReport:
        job = self.settings.dmf_jobs[0]
        return run_dmf_export(
            self.context, job, now=now, budget=budget or RunBudget(max_seconds=30), **kwargs
        )

    def blobs(self) -> list[str]:
        return sorted(b.name for b in self.context.store.container(self.settings.container).list_blobs())

    def json(self, name: str, container: str | None = None) -> Any:
        found = self.context.store.read_json(container or self.settings.container, name)
        assert found is not None, name
        return found.value

    def read(self, name: str) -> bytes:
        return bytes(self.context.store.blob(self.settings.container, name).download_blob().readall())

    def executions(self) -> dict[str, str]:
        answer = self.emulator.admin("GET", "dmf/executions")["executions"]
        return {
            str(e["execution_id"]): str(e["status"]) for e in answer if e["execution_id"].startswith("cust")
        }

    def calls(self, action: str) -> int:
        answer = self.emulator.admin(
            "GET", "requests", params={"path_prefix": ACTION + action, "limit": 1000}
        )
        return sum(1 for r in answer["requests"] if r["path"] == ACTION + action)


def make_stack(emulator: EmulatorInfo, azurite: AzuriteInfo, **job: Any) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    spec = {"name": "customers", "definition_group": PROJECT, "legal_entity": "usmf", **job}
    env = stack_env(
        emulator,
        azurite,
        EXPORTS_CONTAINER=f"exports-{suffix}",
        EXPORTS_STATE_CONTAINER=f"state-{suffix}",
        DMF_EXPORTS=json.dumps([spec]),
        DMF_EXPORT_POLL_SECONDS="0.05",
        D365_RETRY_MAX_ATTEMPTS="3",
        D365_RETRY_BACKOFF_BASE_SECONDS="0.02",
        D365_RETRY_BACKOFF_MAX_SECONDS="0.1",
        D365_RETRY_MAX_SECONDS="20",
    )
    emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.05})
    return Stack(emulator, AppContext.from_settings(Settings.from_env(env)))


def wait_until_done(stack: Stack) -> None:
    deadline = time.monotonic() + 20
    while stack.executions().get(EXECUTION) not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, stack.executions()
        time.sleep(0.05)


@pytest.fixture
def stack(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Stack]:
    built = make_stack(clean_emulator, azurite)
    yield built
    built.context.close()


PACKAGE = f"dmf/{PROJECT}/2026/03/10/{EXECUTION}.zip"


def test_an_export_is_stored_once_per_period(stack: Stack) -> None:
    report = stack.run()
    [item] = report.items
    assert (item.id, item.action, item.outcome) == (EXECUTION, "stored", "succeeded"), report.summary()
    assert report.ok
    data = stack.read(PACKAGE)
    with zipfile.ZipFile(BytesIO(data)) as archive:
        assert {"Manifest.xml", "PackageHeader.xml"} <= set(archive.namelist())
    status = stack.json(f"{PACKAGE}.status.json")
    assert (status["kind"], status["outcome"], status["d365"]["status"]) == (
        "dmf-export",
        "succeeded",
        "Succeeded",
    )
    assert status["details"] == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert status["correlation"]["execution_id"] == EXECUTION
    state = stack.json(f"dmf-exports/customers/{EXECUTION}.json", stack.settings.state_container)
    assert (state["phase"], state["outcome"]) == ("finished", "succeeded")
    later = stack.run(NOW + timedelta(hours=10))  # the same day: the same execution, already done
    assert [(i.id, i.action) for i in later.items] == [(EXECUTION, "already_done")]
    assert stack.executions() == {EXECUTION: "Succeeded"}
    assert stack.calls("ExportToPackage") == 1
    assert stack.blobs() == [PACKAGE, f"{PACKAGE}.status.json"]


def test_a_retried_run_reattaches_instead_of_exporting_again(stack: Stack) -> None:
    first = stack.run(budget=RunBudget(max_seconds=0))  # started, then out of time before polling
    assert [(i.action, i.details) for i in first.items] == [
        ("waiting", {"d365_status": "not polled: run budget used"})
    ]
    assert list(stack.executions()) == [EXECUTION]
    second = stack.run()
    assert [(i.action, i.outcome) for i in second.items] == [("stored", "succeeded")]
    assert stack.calls("ExportToPackage") == 1


def test_a_crash_right_after_export_to_package_does_not_start_a_second_export(stack: Stack) -> None:
    class Crashing(DmfClient):
        def export_to_package(self, *args: Any, **kwargs: Any) -> str:
            super().export_to_package(*args, **kwargs)
            raise SimulatedCrash  # D365 has the job; our state record still says "requested"

    with pytest.raises(SimulatedCrash):
        stack.run(dmf=Crashing(stack.context.odata, stack.context.transport))
    report = stack.run()
    assert [(i.action, i.outcome) for i in report.items] == [("stored", "succeeded")]
    assert stack.calls("ExportToPackage") == 1


def test_a_refused_export_leaves_a_failed_status_record(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo
) -> None:
    stack = make_stack(clean_emulator, azurite, definition_group="No such project")
    try:
        report = stack.run()
        [item] = report.items
        assert (item.action, item.outcome) == ("failed", "failed")
        assert not report.ok
        package = f"dmf/No such project/2026/03/10/{EXECUTION}.zip"
        status = stack.json(f"{package}.status.json")
        assert status["outcome"] == "failed"
        assert status["message"].startswith("ExportToPackage refused")
        assert stack.blobs() == [f"{package}.status.json"]
        assert [i.action for i in stack.run().items] == ["already_done"]  # not retried every run
    finally:
        stack.context.close()


@pytest.mark.parametrize(
    ("forced", "outcome"), [("Failed", "failed"), ("PartiallySucceeded", "partially_succeeded")]
)
def test_failed_and_partial_exports_record_d365s_status_and_errors(
    stack: Stack, forced: str, outcome: str
) -> None:
    stack.run(budget=RunBudget(max_seconds=0))  # started
    wait_until_done(stack)
    stack.emulator.admin("POST", f"dmf/executions/{EXECUTION}/status", json={"status": forced})
    report = stack.run()
    [item] = report.items
    assert (item.outcome, report.ok) == (outcome, False)
    status = stack.json(f"{PACKAGE}.status.json")
    assert (status["outcome"], status["d365"]["status"]) == (outcome, forced)
    assert "errors" not in status["d365"] or isinstance(status["d365"]["errors"], list)
    assert stack.calls("GetExecutionErrors") == 1
    stored = PACKAGE in stack.blobs()
    assert stored is (forced == "PartiallySucceeded")  # a partial export's package is kept


def test_an_unfinished_export_of_an_earlier_period_is_finished_first(stack: Stack) -> None:
    stack.run(budget=RunBudget(max_seconds=0))
    tomorrow = stack.run(NOW + timedelta(days=1))
    assert [(i.id, i.action) for i in tomorrow.items] == [
        (EXECUTION, "stored"),
        ("customers-20260311T0000Z", "stored"),
    ]
    assert stack.calls("ExportToPackage") == 2


def test_an_export_that_never_finishes_is_given_up_after_the_window(stack: Stack) -> None:
    stack.emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 30})  # stays Executing
    stack.run(budget=RunBudget(max_seconds=0))
    report = stack.run(NOW + timedelta(hours=25), budget=RunBudget(max_seconds=0.3))
    first = report.items[0]
    assert (first.id, first.action, first.outcome) == (EXECUTION, "failed", "failed")
    assert re.match(r"gave up: still (NotRun|Executing) after 24 hours", str(first.error))


def test_throttling_server_errors_and_an_expired_token_are_ridden_out(stack: Stack) -> None:
    stack.context.tokens.get_token()
    stack.emulator.admin("POST", "tokens/rotate-key")
    limits(stack.emulator, resource={"next_requests": 2, "retry_after_seconds": 1})
    status_reads = ACTION + "GetExecutionSummaryStatus"
    rule = {"family": "odata", "path_prefix": status_reads, "error_rate": 1, "error_status": 503, "count": 2}
    faults(stack.emulator, rule)
    report = stack.run()
    assert [(i.action, i.outcome) for i in report.items] == [("stored", "succeeded")], report.summary()
    statuses = {
        r["status"] for r in stack.emulator.admin("GET", "requests", params={"limit": 1000})["requests"]
    }
    assert {401, 429, 503} <= statuses
    assert stack.calls("ExportToPackage") == 1


def test_a_crash_after_the_package_was_stored_does_not_download_it_again(stack: Stack) -> None:
    stack.run()
    state_name = f"dmf-exports/customers/{EXECUTION}.json"
    state = stack.json(state_name, stack.settings.state_container)
    rewound = {k: v for k, v in state.items() if k not in ("outcome", "message")} | {"phase": "executed"}
    stack.context.store.write_json(stack.settings.state_container, state_name, rewound)  # as if it died
    report = stack.run()
    assert [(i.action, i.outcome) for i in report.items] == [("already_stored", "succeeded")]
    assert stack.calls("GetExportedPackageUrl") == 1
    assert stack.blobs() == [PACKAGE, f"{PACKAGE}.status.json"]
