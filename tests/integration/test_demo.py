"""``python -m demo`` (``make demo``) as a real process on its own fresh stack, with the sample settings:
every flow passes and the summary says where each result landed; flows D365 breaks make it exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from localstack.processes import ROOT

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
    assert "failed: HTTP 400: Company 'zzzz' does not exist." in summary  # D365's message
    assert "did not exist in usmf: the demo created it first" in summary  # a fresh emulator
    # the populate function: per-record results in the answer, readable through OData, a repeat is safe
    assert "POST /api/populate/customer-groups?legal_entity=usmf with the function key: 2 records" in summary
    assert "HTTP 200, 2 created in CustomerGroups (upsert); 2 of 2 read back through OData" in summary
    assert "the same request again -> HTTP 200, 2 unchanged" in summary
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
    result = run_demo(tmp_path, "--flows", "dmf,http", *faults, timeout=120)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr[-4000:]
    assert "FAIL  DMF export (" in out
    assert "FAIL  HTTP populate (" in out
    summary = out[out.index("Demo summary") :]
    assert "0 of 2 flows passed, 2 flow(s) FAILED" in summary
    assert "ExportToPackage refused: Injected fault" in summary  # D365's own answer, not a bare "failed"
    assert "(status record, no package)" in summary
    # the populate function's answer says which records failed and D365's reason
    assert "-> HTTP 207, 2 failed in CustomerGroups (upsert): expected HTTP 200 and 2 created" in summary
    assert "failed: could not read the current record: HTTP 400: Injected fault" in summary
    assert "Traceback" not in result.stderr
