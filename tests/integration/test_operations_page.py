"""The operations page and ``ops status`` end to end: real state seeded through the real pipelines (imports
against the emulator, business events received and processed, an export's status record written with the
export layout), then the page served by the local runner (function keys enforced), read over HTTP, in
headless Chromium (Debian's chromium driven by Playwright) and through ``python -m ops status``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from localstack.processes import ROOT
from shared.context import AppContext
from shared.events.handler_api import HandlerContext, HandlerResult, PermanentHandlerError
from shared.events.handlers import HandlerRegistry
from shared.events.model import BusinessEvent
from shared.events.settings import BusinessEventSettings
from shared.pipelines.business_events import process_stored_event, receive_events
from shared.pipelines.exports.layout import package_name
from shared.pipelines.imports import ImportSettings
from shared.settings import Settings
from shared.status import Outcome, StatusRecord, status_name
from tests.integration.test_imports_package import CUSTOMERS_ROUTE
from tests.integration.test_imports_stack import (
    PACKAGE_ROUTE,
    ImportStack,
    csv_text,
    customer_groups_csv,
    stack_env,
)
from tests.support.app_functions import deployed_functions
from tests.support.business_events import body_of, make_event
from tests.support.runner_process import runner_command, runner_process, write_local_settings
from tests.support.stack import AzuriteInfo, EmulatorInfo

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "test-artifacts" / "operations-page.png"
EXPORT_ACTIVITY = {"name": "sales-orders", "activity_id": "5b3f2c1e-0000-4e11-8f00-00000000e001"}
KEPT_FUNCTIONS = {"operations_page"}


@dataclass
class Seeded:
    env: dict[str, str]
    base_url: str
    key: str
    settings_file: Path
    events: dict[str, str]  # role -> EventId
    slow_job: str


def _app_functions() -> list[str]:
    return list(deployed_functions())


def _seed_imports(stack: ImportStack, emulator: EmulatorInfo) -> str:
    """One archived, one partially failed (D365 row errors), one rejected, one waiting, one in flight."""
    archived = stack.run(stack.drop("groups/archived groups.csv", customer_groups_csv("1", prefix="OPS")))
    assert archived.job_id is not None
    assert stack.until_finished(archived.job_id) == "succeeded"
    rows = [
        ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE", "CREDITLIMIT"],
        ["OPS-1", "Good customer", "10", "USD", "100"],
        ["OPS-2", "Unknown group", "NOPE", "USD", "100"],
    ]
    mixed = stack.run(stack.drop("customers/mixed.csv", csv_text(rows).encode()))
    assert mixed.job_id is not None
    assert stack.until_finished(mixed.job_id) == "partially_succeeded"
    assert stack.run(stack.drop("nowhere/stray.csv", b"a,b\n1,2\n")).outcome == "rejected"
    emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 120})  # stays Executing
    slow = stack.run(stack.drop("groups/slow groups.csv", customer_groups_csv("2", prefix="OPS")))
    assert slow.outcome == "sent", slow
    assert slow.job_id is not None
    stack.drop("groups/waiting.csv", customer_groups_csv("3", prefix="OPS"))
    return slow.job_id


def _refusing(event: BusinessEvent, context: HandlerContext) -> HandlerResult:
    raise PermanentHandlerError(f"the target refused invoice {event.fields.get('InvoiceId')}")


def _seed_events(env: dict[str, str]) -> dict[str, str]:
    """In order: ControlNumber 100, then 50 (out of order), then 100 again under a new EventId (duplicate),
    then one whose handler refuses it for good (poisoned). Raised now, as D365 does."""
    now = datetime.now(UTC)
    raised = {
        "EventTime": f"/Date({int(now.timestamp()) * 1000})/",
        "EventTimeIso8601": now.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
    }
    events = {
        "first": make_event(ControlNumber=100, **raised),
        "late": make_event(ControlNumber=50, **raised),
        "again": make_event(ControlNumber=100, **raised),
        "poisoned": make_event(ControlNumber=200, InvoiceId="CIV-REFUSED", **raised),
    }
    refusing = HandlerRegistry()
    refusing.register("*", _refusing, name="refusing")
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        settings = context.settings.section(BusinessEventSettings)
        raw = context.store.container(settings.raw_container)
        for role, event in events.items():
            answer = receive_events(context, body_of(event), {"Content-Type": "application/json"})
            assert answer.status == 200, answer.body
            [name] = [b.name for b in raw.list_blobs() if event["EventId"] in b.name]
            if role == "poisoned":
                assert process_stored_event(context, name, registry=refusing).outcome == "poisoned"
            else:
                assert process_stored_event(context, name).outcome == "processed"
    finally:
        context.close()
    return {role: str(event["EventId"]) for role, event in events.items()}


def _seed_export(env: dict[str, str]) -> None:
    context = AppContext.from_settings(Settings.from_env(env))
    try:
        container = env["EXPORTS_CONTAINER"]
        package = package_name(EXPORT_ACTIVITY["name"], datetime.now(UTC), str(uuid.uuid4()))
        record = StatusRecord(
            "export",
            f"{container}/{package}",
            Outcome.SUCCEEDED,
            "stored and acknowledged",
            {"activity": EXPORT_ACTIVITY["name"], "activity_id": EXPORT_ACTIVITY["activity_id"]},
        )
        context.store.write_json(container, status_name(package), record.to_dict())
    finally:
        context.close()


@pytest.fixture(scope="module")
def seeded(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Seeded]:
    emulator.admin("POST", "reset")
    emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02, "error_keys_polls": 2})
    suffix = uuid.uuid4().hex[:8]
    env = stack_env(
        emulator,
        azurite,
        IMPORT_ROUTES=json.dumps([PACKAGE_ROUTE, CUSTOMERS_ROUTE]),
        BUSINESS_EVENTS_CONTAINER=f"ev-{suffix}",
        BUSINESS_EVENTS_STATE_CONTAINER=f"evstate-{suffix}",
        BUSINESS_EVENTS_POISON_CONTAINER=f"evpoison-{suffix}",
        BUSINESS_EVENTS_ENRICHED_CONTAINER=f"evenriched-{suffix}",
        EXPORTS_CONTAINER=f"exports-{suffix}",
        EXPORTS_STATE_CONTAINER=f"exstate-{suffix}",
        EXPORT_ACTIVITIES=json.dumps([EXPORT_ACTIVITY]),
    )
    context = AppContext.from_settings(Settings.from_env(env))
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    stack = ImportStack(context, context.settings.section(ImportSettings), emulator, azurite, service)
    try:
        slow_job = _seed_imports(stack, emulator)
    finally:
        context.close()
        service.close()
    events = _seed_events(env)
    _seed_export(env)
    runner_env = {
        **env,
        "IMPORT_STUCK_AFTER_MINUTES": "0.01",  # the in-flight job counts as stuck on the page
        **{f"AzureWebJobs.{n}.Disabled": "true" for n in _app_functions() if n not in KEPT_FUNCTIONS},
    }
    tmp = tmp_path_factory.mktemp("operations-page")
    settings_file = write_local_settings(tmp / "local.settings.json", runner_env)
    command = runner_command("function_app:app", ROOT, settings_file, "--host-id", f"ops-page-{suffix}")
    process_env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(tmp)}
    try:
        with runner_process(command, process_env, ready_timeout=60) as (_process, info, _output):
            [http] = [h for h in info["http"] if h["function"] == "operations_page"]
            key = info["function_keys"]["operations_page"]["default"]
            yield Seeded(runner_env, info["base_url"], key, settings_file, events, slow_job)
    finally:
        emulator.admin("POST", "reset")  # after the runner stopped
    assert http  # the runner served the page


def _get(seeded: Seeded, route: str, /, *, key: bool = True, **params: str) -> requests.Response:
    if key:
        params["code"] = seeded.key
    return requests.get(f"{seeded.base_url}/api/{route}", params=params, timeout=60)


def test_page_and_records_need_the_function_key(seeded: Seeded) -> None:
    assert _get(seeded, "operations", key=False).status_code == 401
    assert _get(seeded, "operations/record", key=False, path="errors/x.status.json").status_code == 401
    assert _get(seeded, "operations", key=False, code="wrong").status_code == 401


def test_the_overview_counts_what_storage_holds(seeded: Seeded) -> None:
    answer = _get(seeded, "operations", format="json")
    assert answer.status_code == 200, answer.text
    overview: dict[str, Any] = answer.json()
    routes = {r["route"]: r for r in overview["routes"]}
    assert (routes["groups"]["waiting"], routes["groups"]["in_flight"], routes["groups"]["archived"]) == (
        1,
        1,
        1,
    )
    assert routes["groups"]["stuck"] == 1
    assert routes["customers"]["failed"] == 1
    assert routes["_unrouted"]["failed"] == 1
    assert overview["problems"] == []
    [job] = overview["in_flight"]
    assert job["job_id"] == seeded.slow_job
    assert job["stuck"] is True
    assert job["d365_status"] in ("NotRun", "Executing"), job  # asked of D365 live
    failures = {f["outcome"]: f for f in overview["failures"]}
    partial = failures["partially_succeeded"]
    assert partial["d365_status"] == "PartiallySucceeded"
    assert partial["error_count"] >= 1
    assert partial["errors"]
    assert failures["rejected"]["reason_code"] == "unknown_route"
    events = {e["event_id"]: e for e in overview["events"]}
    first, late, again = (events[seeded.events[r]] for r in ("first", "late", "again"))
    assert (first["out_of_order"], first["duplicate"]) == (False, False)
    assert (late["out_of_order"], late["duplicate"]) == (True, False)
    assert again["duplicate"] is True
    assert overview["event_counts"] == {"received": 4, "retrying": 0, "poisoned": 1}
    [poisoned] = [f for f in overview["failures"] if f["kind"] == "business-event"]
    assert seeded.events["poisoned"] in poisoned["subject"]
    assert poisoned["outcome"] == "poisoned"
    assert "the target refused invoice CIV-REFUSED" in poisoned["message"]
    assert poisoned["reason_code"] is None  # not the business event's id dressed up as a reason
    assert overview["unknown"] == []
    [export] = overview["exports"]
    assert (export["name"], export["outcome"]) == ("sales-orders", "succeeded")
    assert "sig=" not in answer.text


def test_the_html_page_links_carry_the_key_and_allow_no_script(seeded: Seeded) -> None:
    answer = _get(seeded, "operations")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    assert f"/api/operations/record?path={quote(seeded.env['IMPORT_ERRORS_CONTAINER'])}" in answer.text
    assert f"code={quote(seeded.key, safe='')}" in answer.text
    assert "<script" not in answer.text
    assert _get(seeded, "operations/other").status_code == 404


def test_a_key_sent_in_a_header_is_not_copied_into_the_page(seeded: Seeded) -> None:
    answer = requests.get(
        f"{seeded.base_url}/api/operations", headers={"x-functions-key": seeded.key}, timeout=60
    )
    assert answer.status_code == 200, answer.text
    assert seeded.key not in answer.text
    assert quote(seeded.key, safe="") not in answer.text
    assert "links carry no key" in answer.text


def test_record_links_serve_status_records_and_nothing_else(seeded: Seeded) -> None:
    overview = _get(seeded, "operations", format="json").json()
    for path in [f["record_path"] for f in overview["failures"]] + [
        e["record_path"] for e in overview["events"]
    ]:
        answer = _get(seeded, "operations/record", path=path)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["Content-Type"].startswith("application/json")
        assert "outcome" in answer.json()
    inflight = overview["in_flight"][0]["record_path"]
    assert _get(seeded, "operations/record", path=inflight).json()["outcome"] in ("sent", "in_progress")
    errors = seeded.env["IMPORT_ERRORS_CONTAINER"]
    state = seeded.env["IMPORT_STATE_CONTAINER"]
    refused = [
        f"{errors}/../{state}/jobs/{seeded.slow_job}.json",
        f"{state}/jobs/{seeded.slow_job}.json",  # a job record is not a status record
        f"{state}/ledger/drops/x.json",
        "azure-webjobs-secrets/x/host.json",
        f"{errors}/customers/mixed.csv",
        f"{errors}//x.status.json",
        "",
    ]
    for path in refused:
        assert _get(seeded, "operations/record", path=path).status_code == 400, path
    assert _get(seeded, "operations/record", path=f"{errors}/none/x.status.json").status_code == 404


def test_the_page_in_headless_chromium(seeded: Seeded) -> None:
    try:
        from playwright import sync_api as playwright_api
    except ImportError:
        pytest.fail("playwright is missing: `make deps` installs requirements-dev.txt")
    assert shutil.which(CHROMIUM), "Debian's chromium is missing: `make test` installs it (see the Makefile)"
    url = f"{seeded.base_url}/api/operations?code={quote(seeded.key)}"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            response = page.goto(url)
            assert response is not None
            assert response.status == 200
            assert page.title().startswith("Operations")
            assert page.locator('[data-card="Stuck"] .n').inner_text() == "1"
            assert page.locator('[data-route="groups"] td').nth(1).inner_text() == "1"
            failures = page.locator("#failures")
            assert "partially succeeded" in failures.inner_text()
            assert "PartiallySucceeded" in failures.inner_text()
            event_row = page.locator(f'[data-event="{seeded.events["again"]}"]')
            assert "duplicate" in event_row.inner_text()
            assert "out of order" in page.locator(f'[data-event="{seeded.events["late"]}"]').inner_text()
            assert page.locator('[data-card="Events poisoned"] .n').inner_text() == "1"
            assert "the target refused invoice CIV-REFUSED" in failures.inner_text()
            assert "reason SalesInvoicePostedBusinessEvent" not in failures.inner_text()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            partial = failures.locator(".failure", has_text="PartiallySucceeded")
            partial.get_by_role("link", name="status record").click()
            page.wait_for_load_state()
            record = json.loads(page.locator("body").inner_text())
            assert (record["kind"], record["outcome"]) == ("import", "partially_succeeded")
        finally:
            browser.close()


def test_ops_status_reports_the_same(seeded: Seeded) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(seeded.settings_file.parent)}
    command = [sys.executable, "-m", "ops", "status", "--settings", str(seeded.settings_file)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = done.stdout
    expected = ["Pipelines by route", f"STUCK {seeded.slow_job}", "partially_succeeded", "[out of order]"]
    for snippet in [*expected, "[duplicate]"]:
        assert snippet in text, text
    started = time.monotonic()
    command += ["--json", "--no-d365"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    overview = json.loads(done.stdout)
    assert overview["totals"]["failed"] == 2
    assert overview["in_flight"][0]["d365_status"] is None
    assert time.monotonic() - started < 60
