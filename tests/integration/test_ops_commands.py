"""``python -m ops resubmit|export-now|import|enqueue`` as real processes against the emulator and Azurite.

Each test gets its own containers; the emulator is reset and its connector and DMF run fast. The progress
bar is checked on a real pseudo-terminal (stderr of the child is a pty), and its absence on a pipe.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from emulator.connector.seed import CUSTOMER_GROUPS_FILE_IMPORT_ID, CUSTOMERS_EXPORT_ID
from localstack.processes import ROOT
from ops.progress import format_bytes
from shared.context import AppContext
from shared.pipelines.exports.layout import dmf_period_start
from shared.pipelines.imports import import_blob, monitor_imports
from shared.pipelines.imports.ledger import Decision, InputRef, decide
from shared.settings import Settings
from tests.integration.test_ops_cli import assert_one_error_line, run_ops
from tests.support.app_env import stack_env
from tests.support.runner_process import write_local_settings
from tests.support.stack import AzuriteInfo, EmulatorInfo

CUSTOMERS_ROUTE = {  # a File job importing customers: a row with an unknown group fails in D365
    "name": "customers",
    "target": "recurring",
    "activity_id": CUSTOMER_GROUPS_FILE_IMPORT_ID,
    "entity": "Customers V3",
    "legal_entity": "usmf",
    "entities": [{"entity": "Customers V3", "source_format": "CSV"}],
}
GROUPS_ROUTE = {
    "name": "groups",
    "target": "recurring",
    "activity_id": CUSTOMER_GROUPS_FILE_IMPORT_ID,
    "entity": "Customer groups",
    "legal_entity": "usmf",
    "entities": [{"entity": "Customer groups", "source_format": "CSV"}],
}


@pytest.fixture
def settings(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> dict[str, str]:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02, "error_keys_polls": 2})
    clean_emulator.admin(
        "PUT", "connector/settings", json={"pickup_delay_seconds": 0.05, "step_seconds": 0.05}
    )
    suffix = uuid.uuid4().hex[:10]
    return stack_env(
        clean_emulator,
        azurite,
        IMPORT_INBOUND_CONTAINER=f"in-{suffix}",
        IMPORT_ARCHIVE_CONTAINER=f"archive-{suffix}",
        IMPORT_ERRORS_CONTAINER=f"errors-{suffix}",
        IMPORT_STATE_CONTAINER=f"state-{suffix}",
        IMPORT_ERROR_FILE_POLL_SECONDS="0.05",
        IMPORT_ROUTES=json.dumps([CUSTOMERS_ROUTE, GROUPS_ROUTE]),
        EXPORTS_CONTAINER=f"exports-{suffix}",
        EXPORTS_STATE_CONTAINER=f"state-{suffix}",
        EXPORT_ACTIVITIES=json.dumps([{"name": "customers", "activity_id": CUSTOMERS_EXPORT_ID}]),
        DMF_EXPORTS=json.dumps([{"name": "customers", "definition_group": "Customers-Export"}]),
        DMF_EXPORT_POLL_SECONDS="0.05",
        D365_RETRY_BACKOFF_BASE_SECONDS="0.05",
    )


@pytest.fixture
def blobs(azurite: AzuriteInfo) -> Iterator[BlobServiceClient]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield service
    service.close()


def names(service: BlobServiceClient, container: str) -> list[str]:
    client = service.get_container_client(container)
    return sorted(b.name for b in client.list_blobs()) if client.exists() else []


def read_json(service: BlobServiceClient, container: str, name: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(service.get_blob_client(container, name).download_blob().readall())
    return value


def customers_csv(path: Path, *rows: tuple[str, str]) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE"])
    writer.writerows([account, "Name", group, "USD"] for account, group in rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def run_on_terminal(
    settings: dict[str, str], tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Like ``run_ops`` but with stderr on a pseudo-terminal; (result with stdout, what stderr showed)."""
    settings_file = write_local_settings(tmp_path / "local.settings.json", settings)
    env = {name: value for name, value in os.environ.items() if name not in settings} | {"TERM": "xterm"}
    master, slave = pty.openpty()
    shown: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "ops", *args, "--settings", str(settings_file)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
        ) as process:
            os.close(slave)
            slave = -1
            stdout, _ = process.communicate(timeout=90)
        reader.join(timeout=10)
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, "")
    return result, b"".join(shown).decode("utf-8", errors="replace")


def test_a_failed_import_is_resubmitted_once_however_often_asked(
    settings: dict[str, str], blobs: BlobServiceClient, clean_emulator: EmulatorInfo, tmp_path: Path
) -> None:
    data = customers_csv(tmp_path / "c.csv", ("OC-1", "10"), ("OC-2", "NO-SUCH-GROUP"))
    imported = run_ops(settings, tmp_path, "import", str(data), "--route", "customers", "--wait", "--json")
    assert imported.returncode == 1, imported.stdout + imported.stderr  # D365: ProcessedWithErrors
    result = json.loads(imported.stdout)
    assert result["outcome"] == "failed"
    assert result["status"]["d365"]["status"] == "ProcessedWithErrors"
    assert "\r" not in imported.stderr  # no progress bar on a pipe
    assert "intake: sent" in imported.stderr
    # operator-run work is logged on the terminal, not in Application Insights: its alert lines show
    assert "ERROR IMPORT_JOB_FAILED: D365 finished the import with errors" in imported.stderr
    failed = result["stored_as"]
    errors = settings["IMPORT_ERRORS_CONTAINER"]
    assert failed.startswith(f"{errors}/customers/")

    listed = run_ops(settings, tmp_path, "resubmit", "--list")
    assert listed.returncode == 0, listed.stderr
    assert f"{failed}  failed" in listed.stdout
    assert "resubmittable" in listed.stdout

    first = run_ops(settings, tmp_path, "resubmit", failed + ".status.json", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["outcome"], report["attempt"]) == ("resubmitted", 1)
    assert report["inbound"] == f"{settings['IMPORT_INBOUND_CONTAINER']}/customers/c.csv"
    assert report["ledger"]["state"] == "failed"
    again = run_ops(settings, tmp_path, "resubmit", "--route", "customers", "--file", "c.csv")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"already_resubmitted: {failed}")

    # the duplicate protection lets exactly this one drop through, as the next generation
    assert names(blobs, settings["IMPORT_INBOUND_CONTAINER"]) == ["customers/c.csv"]
    context = AppContext.from_settings(Settings.from_env(settings))
    try:
        reimport = import_blob(context, "customers/c.csv")
        assert reimport.outcome == "sent", reimport
        assert reimport.job_id is not None
        assert reimport.job_id.endswith("-r2")
        deadline = time.monotonic() + 30
        while reimport.job_id not in monitor_imports(context).finished and time.monotonic() < deadline:
            time.sleep(0.2)  # the same content fails again in D365
    finally:
        context.close()
    messages = clean_emulator.admin(
        "GET", "connector/messages", params={"activity_id": CUSTOMER_GROUPS_FILE_IMPORT_ID}
    )["messages"]
    assert len(messages) == 2  # the first import and one re-import
    third = run_ops(settings, tmp_path, "resubmit", failed, "--json")
    assert json.loads(third.stdout)["outcome"] == "already_resubmitted"
    assert names(blobs, settings["IMPORT_INBOUND_CONTAINER"]) == []

    state = settings["IMPORT_STATE_CONTAINER"]
    [entry_name] = [n for n in names(blobs, state) if n.startswith("ledger/") and "/drops/" not in n]
    entry = read_json(blobs, state, entry_name)
    assert (entry["generation"], entry["resubmissions"], entry["state"]) == (2, 1, "failed")
    assert entry["resubmission_of"]["source"] == failed
    old = read_json(blobs, errors, failed.split("/", 1)[1] + ".status.json")  # history kept, annotated
    assert old["outcome"] == "failed"
    assert old["details"]["resubmitted"]["attempt"] == 1
    relisted = run_ops(settings, tmp_path, "resubmit", "--list", "--route", "customers")
    assert "re-submitted (attempt 1" in relisted.stdout

    # the re-import's own failure is the one resubmittable failure of c.csv now: attempt 2, followed
    waited = run_ops(
        settings, tmp_path, "resubmit", "--route", "customers", "--file", "c.csv", "--wait", "--json"
    )
    assert waited.returncode == 1, waited.stderr  # it failed in D365 once more
    followed = json.loads(waited.stdout)
    assert followed["resubmitted"]["attempt"] == 2
    assert followed["resubmitted"]["source"] != failed
    assert (followed["outcome"], followed["job_id"]) == ("failed", reimport.job_id[:-1] + "3")
    assert read_json(blobs, state, entry_name)["resubmissions"] == 2


def test_bad_selections_are_one_error_line(
    settings: dict[str, str], blobs: BlobServiceClient, tmp_path: Path
) -> None:
    errors = settings["IMPORT_ERRORS_CONTAINER"]
    missing = run_ops(settings, tmp_path, "resubmit", f"{errors}/customers/2026/01/01/x/nope.csv")
    assert missing.returncode == 1
    assert "no failed import at" in assert_one_error_line(missing)

    unknown = run_ops(settings, tmp_path, "resubmit", "--route", "nosuch", "--file", "a.csv")
    assert unknown.returncode == 1
    assert "no import route named 'nosuch'" in assert_one_error_line(unknown)

    none_failed = run_ops(settings, tmp_path, "resubmit", "--route", "groups", "--file", "a.csv")
    assert none_failed.returncode == 1
    assert "no failed import of 'a.csv' in route 'groups'" in assert_one_error_line(none_failed)

    data = customers_csv(tmp_path / "c.csv", ("X", "10"))
    bad_route = run_ops(settings, tmp_path, "import", str(data), "--route", "nosuch")
    assert bad_route.returncode == 1
    assert "routes: customers, groups" in assert_one_error_line(bad_route)

    no_file = run_ops(settings, tmp_path, "import", str(tmp_path / "absent.csv"), "--route", "groups")
    assert no_file.returncode == 1
    assert "absent.csv: no such file" in assert_one_error_line(no_file)

    wrong_company = run_ops(
        settings, tmp_path, "import", str(data), "--route", "groups", "--legal-entity", "demf"
    )
    assert wrong_company.returncode == 1
    assert "takes the legal entity from the route's legal_entity" in assert_one_error_line(wrong_company)

    no_activity = run_ops(settings, tmp_path, "export-now", "--activity", "nosuch")
    assert no_activity.returncode == 1
    assert "no export activity named 'nosuch'" in assert_one_error_line(no_activity)

    outside = run_ops(settings, tmp_path, "resubmit", "../../etc/passwd")
    assert outside.returncode == 1
    assert "'../../etc/passwd' is not the path of a failed import" in assert_one_error_line(outside)

    csv_only = {"entity": "Customer groups", "source_format": "CSV", "file_pattern": "*.csv"}
    packaged = {**GROUPS_ROUTE, "send_as": "package", "entities": [csv_only]}  # built from *.csv entries
    patterned = {**settings, "IMPORT_ROUTES": json.dumps([packaged])}
    text_file = tmp_path / "g.txt"
    text_file.write_text("CustomerGroupId,Description\nG1,One\n", encoding="utf-8")
    unmatched = run_ops(patterned, tmp_path, "import", str(text_file), "--route", "groups")
    assert unmatched.returncode == 1
    line = assert_one_error_line(unmatched)
    assert "route 'groups' has no entity for 'g.txt' (file patterns: '*.csv')" in line
    assert names(blobs, settings["IMPORT_INBOUND_CONTAINER"]) == []  # refused before the upload


def test_import_wait_follows_only_its_own_file(
    settings: dict[str, str], blobs: BlobServiceClient, tmp_path: Path
) -> None:
    settings = {**settings, "IMPORT_RETRY_AFTER_MINUTES": "0"}  # the monitor's sweep would take any file
    inbound, state = settings["IMPORT_INBOUND_CONTAINER"], settings["IMPORT_STATE_CONTAINER"]
    blobs.create_container(inbound)
    blobs.get_blob_client(inbound, "groups/other.csv").upload_blob(b"CustomerGroupId,Description\nO1,x\n")
    context = AppContext.from_settings(Settings.from_env(settings))
    try:
        other = import_blob(context, "groups/other.csv")  # another file in flight: the timer's business
    finally:
        context.close()
    assert other.outcome == "sent", other
    blobs.get_blob_client(inbound, "groups/waiting.csv").upload_blob(b"CustomerGroupId,Description\nW1,x\n")

    data = tmp_path / "mine.csv"
    data.write_text("CustomerGroupId,Description\nM1,Mine\n", encoding="utf-8")
    waited = run_ops(settings, tmp_path, "import", str(data), "--route", "groups", "--wait", "--json")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert json.loads(waited.stdout)["outcome"] == "succeeded"
    assert f"jobs/{other.job_id}.json" in names(blobs, state)  # D365 finished it too; left to the timer
    assert "groups/waiting.csv" in names(blobs, inbound)  # no sweep of inbound either


def test_import_and_enqueue_show_a_progress_bar_on_a_terminal(
    settings: dict[str, str], blobs: BlobServiceClient, clean_emulator: EmulatorInfo, tmp_path: Path
) -> None:
    rows = [(f"PB{n:06d}", f"Group {n}") for n in range(8_000)]  # about 180 KiB
    data = tmp_path / "groups.csv"
    data.write_text(
        "CustomerGroupId,Description\n" + "".join(f"{a},{d}\n" for a, d in rows), encoding="utf-8"
    )
    size = data.stat().st_size

    uploaded, shown = run_on_terminal(settings, tmp_path, "import", str(data), "--route", "groups")
    assert uploaded.returncode == 0, shown
    assert "\r" in shown
    assert "groups.csv  100% |" in shown
    assert "MiB/s" in shown
    inbound = settings["IMPORT_INBOUND_CONTAINER"]
    assert uploaded.stdout.startswith(f"uploaded {format_bytes(size)} to {inbound}/groups/groups.csv")
    stored = blobs.get_blob_client(inbound, "groups/groups.csv").download_blob().readall()
    assert stored == data.read_bytes()

    taken = run_ops(settings, tmp_path, "import", str(data), "--route", "groups")  # never overwritten
    assert taken.returncode == 1
    assert "already exists" in assert_one_error_line(taken)

    quiet, shown_quietly = run_on_terminal(
        settings, tmp_path, "enqueue", str(data), "--activity", CUSTOMER_GROUPS_FILE_IMPORT_ID,
        "--entity", "Customer groups", "--company", "usmf", "--no-progress", "--json",
    )  # fmt: skip
    assert quiet.returncode == 0, shown_quietly
    assert "%" not in shown_quietly

    enqueued, shown = run_on_terminal(
        settings, tmp_path, "enqueue", str(data), "--activity", CUSTOMER_GROUPS_FILE_IMPORT_ID,
        "--entity", "Customer groups", "--company", "usmf", "--wait",
    )  # fmt: skip
    assert enqueued.returncode == 0, shown
    assert "groups.csv  100% |" in shown
    message_id = enqueued.stdout.split()[1].rstrip(":")
    assert enqueued.stdout.strip() == f"message {message_id}: Processed"
    message = clean_emulator.admin("GET", f"connector/messages/{message_id}")
    assert (message["size"], message["external_identifier"]) == (size, "groups.csv")
    assert json.loads(quiet.stdout)["message_id"] != message_id  # enqueue is not idempotent: two messages


def test_export_now_dequeues_and_runs_a_dmf_export(
    settings: dict[str, str], blobs: BlobServiceClient, clean_emulator: EmulatorInfo, tmp_path: Path
) -> None:
    queued = [
        clean_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export") for _ in "ab"
    ]
    exports = settings["EXPORTS_CONTAINER"]
    dequeued = run_ops(settings, tmp_path, "export-now", "--activity", "customers")
    assert dequeued.returncode == 0, dequeued.stdout + dequeued.stderr
    for message in queued:
        assert f"stored {message['message_id']} -> {exports}/customers/" in dequeued.stdout
    packages = [n for n in names(blobs, exports) if n.endswith(".zip")]
    assert len(packages) == 2
    empty = run_ops(settings, tmp_path, "export-now", "--all-activities")
    assert empty.returncode == 0, empty.stderr
    assert "nothing to do" in empty.stdout

    slot = dmf_period_start(datetime.now(UTC), 5)
    first = run_ops(settings, tmp_path, "export-now", "--dmf", "Customers-Export", "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    [report] = json.loads(first.stdout)
    [item] = report["items"]
    assert (item["action"], item["outcome"]) == ("stored", "succeeded")
    assert item["path"].startswith(f"{exports}/dmf/Customers-Export/")
    assert blobs.get_blob_client(exports, item["path"].split("/", 1)[1]).exists()
    second = run_ops(settings, tmp_path, "export-now", "--dmf", "customers", "--json")
    assert second.returncode == 0, second.stderr
    if dmf_period_start(datetime.now(UTC), 5) == slot:  # the same 5-minute slot: re-attached, not re-run
        assert [i["action"] for i in json.loads(second.stdout)[0]["items"]] == ["already_done"]
        executions = clean_emulator.admin("GET", "dmf/executions")["executions"]
        assert len([e for e in executions if e["execution_id"].startswith("customers-")]) == 1


def test_the_ledger_lets_only_the_permitted_blob_past_the_duplicate_rule() -> None:
    permit = {"container": "inbound", "name": "customers/c.csv", "source": "errors/x/c.csv"}
    entry = {"state": "failed", "generation": 1, "input": {"drop_id": "old"}, "resubmission": permit}

    def drop(name: str) -> InputRef:
        return InputRef("inbound", name, '"etag"', f"drop-{name}", 10)

    assert decide(entry, drop("customers/c.csv"), "skip") == (Decision.SEND, 2)
    assert decide(entry, drop("customers/other.csv"), "skip") == (Decision.DUPLICATE, 1)
    assert decide({**entry, "state": "uncertain"}, drop("customers/c.csv"), "skip") == (Decision.SEND, 2)
    assert decide({**entry, "state": "sent"}, drop("customers/c.csv"), "skip")[0] is Decision.DUPLICATE
    assert decide({**entry, "state": "succeeded"}, drop("customers/c.csv"), "skip")[0] is Decision.DUPLICATE
