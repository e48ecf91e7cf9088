"""The import pipelines against the real stack (Azurite + the emulator): shared helpers, and the basics.

Every test gets its own containers (unique names) on the session's Azurite and a reset emulator whose DMF
and connector run fast; ``ImportStack`` drops files, runs the pipelines directly and reads the results.
Other ``test_imports_*`` modules import the helpers and the ``stack`` fixture from here.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from azure.storage.blob import BlobServiceClient
from requests.adapters import HTTPAdapter

from shared.context import AppContext
from shared.pipelines.imports import ImportReport, ImportSettings, MonitorReport, import_blob, monitor_imports
from shared.settings import Settings
from tests.support.stack import AzuriteInfo, EmulatorInfo

CUSTOMER_GROUPS_JOB = "0a1b2c3d-d365-4e11-8f00-00000000d001"  # seeded File job: entity "Customer groups"
PACKAGE_JOB = "0a1b2c3d-d365-4e11-8f00-00000000d002"  # seeded Data package job


def stack_env(emulator: EmulatorInfo, azurite: AzuriteInfo, **overrides: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    env = {
        "D365_BASE_URL": emulator.base_url,
        "D365_AUTH_MODE": "client_secret",
        "D365_CLIENT_ID": emulator.client_id,
        "D365_CLIENT_SECRET": emulator.client_secret,
        "D365_TENANT_ID": emulator.tenant_id,
        "D365_AUTHORITY_HOST": emulator.authority_host,
        "TLS_CA_BUNDLE": emulator.ca_file,
        "AzureWebJobsStorage": azurite.connection_string,
        "D365_RETRY_MAX_SECONDS": "20",
        "D365_RETRY_BACKOFF_BASE_SECONDS": "0.05",
        "D365_RETRY_BACKOFF_MAX_SECONDS": "0.2",
        "IMPORT_INBOUND_CONTAINER": f"in-{suffix}",
        "IMPORT_ARCHIVE_CONTAINER": f"archive-{suffix}",
        "IMPORT_ERRORS_CONTAINER": f"errors-{suffix}",
        "IMPORT_STATE_CONTAINER": f"state-{suffix}",
        "IMPORT_LOCK_WAIT_SECONDS": "20",
        "IMPORT_ERROR_FILE_POLL_SECONDS": "0.05",
        "IMPORT_RETRY_AFTER_MINUTES": "0",
    }
    env.update(overrides)
    return env


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def customer_groups_csv(*groups: str, prefix: str = "") -> bytes:
    rows = [["CustomerGroupId", "Description"], *[[f"{prefix}{g}", f"Group {g}"] for g in groups]]
    return csv_text(rows).encode("utf-8")


@dataclass
class ImportStack:
    context: AppContext
    settings: ImportSettings
    emulator: EmulatorInfo
    azurite: AzuriteInfo
    service: BlobServiceClient
    sleeps: list[float] = field(default_factory=list)
    finished: dict[str, str] = field(default_factory=dict)  # every job a monitor run here finished

    def drop(self, name: str, data: bytes, **kwargs: Any) -> str:
        container = self.context.store.container(self.settings.inbound_container)  # created when missing
        container.get_blob_client(name).upload_blob(data, overwrite=True, **kwargs)
        return name

    def run(self, name: str) -> ImportReport:
        return import_blob(self.context, name, settings=self.settings, sleep=self.sleep)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        time.sleep(min(seconds, 0.2))

    def monitor(self, now: datetime | None = None) -> MonitorReport:
        report = monitor_imports(self.context, settings=self.settings, now=now, sleep=self.sleep)
        self.finished.update(report.finished)
        return report

    def until_finished(self, job_id: str, timeout: float = 40) -> str:
        """Run the monitor until it finished ``job_id``; its outcome."""
        deadline = time.monotonic() + timeout
        while job_id not in self.finished and time.monotonic() < deadline:
            report = self.monitor()
            assert job_id not in report.poll_errors, report.poll_errors
            if job_id not in self.finished:
                time.sleep(0.1)
        assert job_id in self.finished, f"job {job_id} did not finish; last report {report}"
        return self.finished[job_id]

    def names(self, container: str, prefix: str = "") -> list[str]:
        client = self.service.get_container_client(container)
        if not client.exists():
            return []
        return sorted(b.name for b in client.list_blobs(name_starts_with=prefix))

    def read(self, container: str, name: str) -> bytes:
        return self.service.get_blob_client(container, name).download_blob().readall()

    def record(self, stored_as: str) -> dict[str, Any]:
        container, _, name = stored_as.partition("/")
        record: dict[str, Any] = json.loads(self.read(container, name + ".status.json"))
        return record

    def ledger(self) -> list[dict[str, Any]]:
        state = self.settings.state_container
        names = [n for n in self.names(state, "ledger/") if not n.startswith("ledger/drops/")]
        return [json.loads(self.read(state, n)) for n in names]

    def jobs(self) -> list[str]:
        return self.names(self.settings.state_container, "jobs/")

    def odata(self, path: str, **params: str) -> list[dict[str, Any]]:
        response = self.context.transport.request("GET", f"data/{path}", params=params)
        return list(response.json()["value"])

    def executions(self) -> list[dict[str, Any]]:
        """Package-API imports the emulator journaled (admin API)."""
        answer = self.emulator.admin("GET", "dmf/executions")
        rows = answer["executions"] if isinstance(answer, dict) else answer
        return [r for r in rows if r.get("source") == "package-api" and r.get("kind") == "import"]

    def messages(self, activity_id: str) -> list[dict[str, Any]]:
        answer = self.emulator.admin("GET", "connector/messages", params={"activity_id": activity_id})
        return list(answer["messages"])

    def later(self, minutes: float) -> datetime:
        return datetime.now(UTC) + timedelta(minutes=minutes)


class FaultAdapter(HTTPAdapter):
    """Answers the first ``count`` matching requests with ``status`` (and ``Retry-After``) without sending
    them; every other request goes to the real server. Mounted on the app's session for Azurite's ``dmf``
    container: the SAS blob host D365 hands out cannot inject faults itself."""

    def __init__(self, status: int, count: int, *, match: Callable[[requests.PreparedRequest], bool]) -> None:
        super().__init__(max_retries=0)
        self.status, self.left, self.match = status, count, match
        self.faulted: list[str] = []

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        if self.left > 0 and self.match(request):
            self.left -= 1
            self.faulted.append(f"{request.method} {request.url}")
            response = requests.Response()
            response.status_code = self.status
            response.headers["Retry-After"] = "1" if self.status == 429 else ""
            response._content = b"<?xml version='1.0'?><Error><Code>ServerBusy</Code></Error>"
            response.url = str(request.url)
            response.request = request
            return response
        return super().send(request, *args, **kwargs)


@pytest.fixture
def make_stack(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Callable[..., ImportStack]]:
    """``make_stack(routes, **settings)``: an ImportStack for these routes (fast DMF and connector)."""
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02, "error_keys_polls": 2})
    clean_emulator.admin(
        "PUT", "connector/settings", json={"pickup_delay_seconds": 0.05, "step_seconds": 0.05}
    )
    made: list[ImportStack] = []

    def make(routes: list[dict[str, Any]], **overrides: str) -> ImportStack:
        env = stack_env(clean_emulator, azurite, IMPORT_ROUTES=json.dumps(routes), **overrides)
        context = AppContext.from_settings(Settings.from_env(env))
        stack = ImportStack(
            context,
            context.settings.section(ImportSettings),
            clean_emulator,
            azurite,
            BlobServiceClient.from_connection_string(azurite.connection_string),
        )
        made.append(stack)
        return stack

    yield make
    for stack in made:
        stack.context.close()
        stack.service.close()


PACKAGE_ROUTE = {
    "name": "groups",
    "target": "package",
    "definition_group": "Imports-Customer-groups",
    "overwrite": True,
    "legal_entity": "usmf",
    "entities": [{"entity": "Customer groups", "file_pattern": "*.csv"}],
}


def test_unknown_folder_is_rejected_with_a_status_record_and_nothing_sent(make_stack) -> None:
    stack = make_stack([PACKAGE_ROUTE])
    stack.drop("nowhere/groups.csv", customer_groups_csv("A"))
    report = stack.run("nowhere/groups.csv")
    assert (report.outcome, report.reason_code) == ("rejected", "unknown_route")
    assert report.stored_as is not None
    assert report.stored_as.startswith(f"{stack.settings.errors_container}/_unrouted/")
    record = stack.record(report.stored_as)
    assert record["outcome"] == "rejected"
    assert "no import route serves" in record["message"]
    assert record["details"]["reason_code"] == "unknown_route"
    assert stack.names(stack.settings.inbound_container) == []
    assert stack.executions() == []


def test_a_file_that_is_gone_or_leased_elsewhere_is_left_alone(make_stack) -> None:
    stack = make_stack([PACKAGE_ROUTE])
    assert stack.run("groups/missing.csv").outcome == "gone"
    stack.drop("groups/held.csv", customer_groups_csv("A"))
    blob = stack.service.get_blob_client(stack.settings.inbound_container, "groups/held.csv")
    lease = blob.acquire_lease(lease_duration=15)
    try:
        assert stack.run("groups/held.csv").outcome == "busy"
    finally:
        lease.release()
    assert stack.names(stack.settings.inbound_container) == ["groups/held.csv"]
    assert stack.ledger() == []
