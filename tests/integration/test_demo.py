"""``python -m demo`` (``make demo``) as a real process on its own fresh stack, with the sample settings:
every flow passes and the summary says where each result landed; a flow D365 breaks makes it exit 1."""

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
    assert "6 of 6 flows passed, every flow passed" in summary
    for title in (
        "raw CSV import",
        "package import",
        "import with row errors",
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
    result = run_demo(tmp_path, "--flows", "dmf", "--inject-fault", json.dumps(REFUSE_DMF), timeout=120)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr[-4000:]
    assert "FAIL  DMF export (" in out
    summary = out[out.index("Demo summary") :]
    assert "0 of 1 flows passed, 1 flow(s) FAILED" in summary
    assert "ExportToPackage refused: Injected fault" in summary  # D365's own answer, not a bare "failed"
    assert "(status record, no package)" in summary
    assert "Traceback" not in result.stderr
