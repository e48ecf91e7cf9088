"""``python -m demo`` (``make demo``) as a real process on its own fresh stack, with the sample settings:
every flow passes and the summary says where each result landed; flows D365 breaks (or bad input) make it
exit 1. The verdicts each flow passes on (demo/imports.py, demo/events.py) are checked directly too: each
of their checks can fail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from demo.events import event_problems
from demo.imports import import_problems
from localstack.processes import ROOT
from shared.pipelines.imports.settings import ImportSettings
from shared.status import Outcome

SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
REFUSE_DMF = {
    "family": "odata",
    "path_prefix": "/data/DataManagementDefinitionGroups",
    "error_rate": 1,
    "error_status": 400,
}
REFUSE_BATCH = {"family": "odata", "path_prefix": "/data/$batch", "error_rate": 1, "error_status": 400}


def run_demo(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # Only what a shell gives: the sample's values (and the stack's addresses) are what the demo sees.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "demo", "--settings", str(SAMPLE_SETTINGS), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_flow_passes_and_the_summary_says_where_results_landed(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-4000:]
    summary = out[out.index("Demo summary") :]
    assert "8 of 8 flows passed, every flow passed" in summary
    for title in (
        "raw CSV import",
        "package import",
        "import with row errors",
        "real-time file populate",
        "HTTP populate",
        "business events",
        "export dequeue",
        "DMF export",
    ):
        assert f"PASS  {title}: " in summary, summary
        assert f"PASS  {title} (" in out  # the line printed when the flow ended
    assert "FAIL" not in out
    # the raw CSV and Microsoft's sample package archived beside their status records
    assert "-> recurring job 0a1b2c3d-d365-4e11-8f00-00000000d001" in summary
    assert "archive/customer-groups/" in summary
    assert "archive/packages/" in summary
    assert "usmf_asset-major-types-01-" in summary
    # the rows D365 refused: errors location, D365's messages and error files
    assert "D365 PartiallySucceeded -> errors with D365's detail: 2 error(s)" in summary
    assert "/d365/execution-errors.json" in summary
    assert "/d365/Customers_V3.target-error-keys.csv" in summary
    # the real-time file: written record by record, each with its result and D365's own message
    assert "inbound/realtime/customer-groups/demo-realtime-customer-groups-" in summary
    assert "-> errors, partially_succeeded: 1 created, 1 updated, 2 failed" in summary
    assert "errors/customer-groups-realtime/" in summary
    assert "record 2 usmf/DEMO-RT: updated" in summary
    assert "'Maybe' is not a value of enum NoYes (No, Yes)" in summary  # the app's type check
    # a record naming another legal entity than the route's: the app refuses it (never written elsewhere)
    assert "failed: dataAreaId 'zzzz': this target writes to legal entity 'usmf' only" in summary
    assert "did not exist in usmf: the demo created it first" in summary  # a fresh emulator
    # the populate function: per-record results in the answer, readable through OData, a repeat is safe
    assert "POST /api/populate/customer-groups?legal_entity=usmf with the function key: 2 records" in summary
    assert "HTTP 200, 2 created in CustomerGroups (upsert); 2 of 2 read back through OData" in summary
    assert "the same request again -> HTTP 200, 2 unchanged" in summary
    # a legal entity the caller asks for and D365 does not have: D365's own message
    refused = "for ?legal_entity=zzzz -> HTTP 207, failed: \"HTTP 400: Company 'zzzz' does not exist.\""
    assert refused in summary
    assert "D365: /data/CustomerGroups(dataAreaId='usmf',CustomerGroupId='RH" in summary
    # the import-status events: each sent twice, stored and processed once, enriched
    assert "3 NAVAXDMFImportStatusBusinessEvent raised by the imports, 6 deliveries" in summary
    assert "events-enriched/NAVAXDMFImportStatusBusinessEvent/usmf/" in summary
    # the exports
    assert "stored and acknowledged" in summary
    assert "exports/customers/" in summary
    assert ".manifest.json" in summary
    assert "exports/dmf/Customers-Export/" in summary
    assert "Traceback" not in result.stderr


def test_a_flow_d365_breaks_fails_the_demo(tmp_path: Path) -> None:
    faults = ("--inject-fault", json.dumps(REFUSE_DMF), "--inject-fault", json.dumps(REFUSE_BATCH))
    no_manifest = tmp_path / "no-manifest.zip"  # not a data package: the app refuses it before D365
    with zipfile.ZipFile(no_manifest, "w") as package:
        package.writestr("Customer groups.csv", "CUSTOMERGROUPID\r\nDEMO1\r\n")
    flows = ("--flows", "dmf,http,package,events", "--package", str(no_manifest))
    result = run_demo(tmp_path, *flows, *faults, timeout=120)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr[-4000:]
    assert "FAIL  DMF export (" in out
    assert "FAIL  HTTP populate (" in out
    summary = out[out.index("Demo summary") :]
    assert "0 of 4 flows passed, 4 flow(s) FAILED" in summary
    # the package rests in errors, never sent: the flow says what was expected and the app's reason
    assert "-> not sent to D365 -> errors: expected succeeded, got rejected: " in summary
    assert "has no Manifest.xml" in summary
    assert "FAIL  business events: no import of this run reached D365" in summary
    assert "ExportToPackage refused: Injected fault" in summary  # D365's own answer, not a bare "failed"
    assert "(status record, no package)" in summary
    # the populate function's answer says which records failed and D365's reason
    assert "-> HTTP 207, 2 failed in CustomerGroups (upsert): expected HTTP 200 and 2 created" in summary
    assert "failed: could not read the current record: HTTP 400: Injected fault" in summary
    assert "Traceback" not in result.stderr


# -- the verdicts: what docs/demo.md says each flow passes on, and that each check can fail

ROW_ERRORS = "errors/customers/2026/11/26/customers-0123/d365/"
ERROR_FILES = [
    f"{ROW_ERRORS}execution-errors.json",
    f"{ROW_ERRORS}Customers_V3.target-error-keys.csv",
    f"{ROW_ERRORS}Customers_V3.staging-errors.csv",
]


def _partial(**d365: Any) -> dict[str, Any]:
    detail = {"errors": [{"message": "Error converting the value 'ten'"}], "error_files": ERROR_FILES}
    return {"outcome": "partially_succeeded", "d365": {**detail, **d365}}


def _import_problems(
    record: dict[str, Any],
    container: str,
    expect: Outcome = Outcome.PARTIALLY_SUCCEEDED,
    stored: list[str] = ERROR_FILES,
) -> list[str]:
    return import_problems(record, container, expect=expect, settings=ImportSettings(), stored_files=stored)


def test_the_import_verdict_checks_outcome_location_and_d365_detail() -> None:
    assert _import_problems(_partial(), "errors") == []
    assert _import_problems({"outcome": "succeeded"}, "archive", Outcome.SUCCEEDED) == []
    assert _import_problems({"outcome": "succeeded"}, "errors", Outcome.SUCCEEDED) == [
        "it rests in errors, not in archive"
    ]
    assert _import_problems(_partial(), "archive") == ["it rests in archive, not in errors"]
    assert _import_problems({"outcome": "failed", "message": "refused"}, "errors") == [
        "expected partially_succeeded, got failed: refused"
    ]
    assert _import_problems(_partial(errors=[]), "errors") == [
        "D365's error messages are missing from the status record"
    ]
    assert _import_problems(_partial(error_files=ERROR_FILES[:2]), "errors") == [
        "the staging error file is missing from the status record"
    ]
    assert _import_problems(_partial(), "errors", stored=ERROR_FILES[1:]) == [
        f"listed in the status record but not stored: {ERROR_FILES[0]}"
    ]


RAW = "events/NAVAXDMFImportStatusBusinessEvent/usmf/2026/11/26/E1.json"
ENRICHED = "events-enriched/NAVAXDMFImportStatusBusinessEvent/usmf/2026/11/26/E1.json"
DELIVERED = {"event_id": "E1", "outcome": "delivered"}


def _event_problems(
    deliveries: tuple[dict[str, Any], ...] = (DELIVERED, DELIVERED),
    stored: int = 1,
    attempts: int = 1,
    outputs: tuple[str, ...] = (ENRICHED,),
    document: dict[str, Any] | None = None,
) -> list[str]:
    details = {"attempts": attempts, "outputs": list(outputs), "completed_handlers": ["enrich"]}
    record = {"outcome": "succeeded", "subject": RAW, "details": details}
    return event_problems(
        {"E1": ("execution-1", record, RAW)},
        list(deliveries),
        stored={"E1": stored},
        documents={
            ENRICHED: document if document is not None else {"record": {"ExecutionId": "execution-1"}}
        },
        enriched_container="events-enriched",
    )


def test_the_events_verdict_checks_duplicates_deduplication_processing_and_enrichment() -> None:
    assert _event_problems() == []
    [once] = _event_problems(deliveries=(DELIVERED,))  # no duplicate delivery: nothing was deduplicated
    assert once.startswith("event E1 was delivered 1 time(s), not twice")
    assert _event_problems(stored=2) == ["event E1 is stored 2 time(s), not once"]
    assert _event_problems(attempts=2) == ["event E1 was processed in 2 attempts"]
    [plain] = _event_problems(outputs=())
    assert plain.startswith("event E1 was not enriched")
    assert _event_problems(document={"event": {}}) == [
        f"event E1: the enriched document {ENRICHED} has no D365 record"
    ]
    refused = (DELIVERED, {"event_id": "E1", "outcome": "failed"})
    assert _event_problems(deliveries=refused) == ["1 of 2 deliveries were not accepted by the receiver"]
