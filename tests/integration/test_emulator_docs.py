"""The emulator as docs/emulator.md shows it: started with a kept data directory and a token lifetime, and
the admin calls of the business-events, connector and DMF families, each round-tripped over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from localstack.processes import ROOT, EmulatorInfo, stop_process
from tests.support.d365 import make_transport
from tests.support.scripted_server import refused_url

READY = "EMULATOR READY "
INVOICE = "SalesInvoicePostedBusinessEvent"
ALERT = "BusinessEventsAlertEvent"
EXPORT_ACTION = "data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.ExportToPackage"


def _raw(emulator: EmulatorInfo, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{emulator.base_url}/_emulator/{path}", timeout=30, **kwargs)


def _wait_until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def reset_after(clean_emulator: EmulatorInfo) -> Iterator[EmulatorInfo]:
    yield clean_emulator
    clean_emulator.admin("POST", "reset")


# -- starting it ---------------------------------------------------------------------------------------------


def test_started_with_a_data_dir_and_token_lifetime_keeps_its_files_and_issues_600s_tokens(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / ".local" / "emulator"
    command = [
        sys.executable, "-m", "emulator", "--data-dir", str(data_dir), "--token-lifetime", "600",
        "--port", "0", "--tls-port", "0", "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(READY), line
        info = EmulatorInfo(json.loads(line[len(READY) :]))
        answer = requests.post(
            info.token_url,
            data={
                "grant_type": "client_credentials",
                "client_id": info.client_id,
                "client_secret": info.client_secret,
                "scope": f"{info.base_url}/.default",
            },
            verify=info.ca_file,
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert int(answer.json()["expires_in"]) == 600
        claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 600
        assert Path(info.ca_file).parent == data_dir
    finally:
        stop_process(process, timeout=15)
    assert process.returncode == 0
    assert (data_dir / Path(info.ca_file).name).is_file()  # kept: not a temporary directory


# -- business events -----------------------------------------------------------------------------------------


def test_business_events_catalog_entry_and_clearing_the_error_log(reset_after: EmulatorInfo) -> None:
    emulator = reset_after
    one = emulator.admin("GET", f"business-events/catalog/{INVOICE}")
    assert one["BusinessEventId"] == INVOICE
    assert one["Fields"]
    unknown = _raw(emulator, "GET", "business-events/catalog/NoSuchBusinessEvent")
    assert unknown.status_code == 400
    assert INVOICE in unknown.json()["error"]  # the answer names the events the catalog has

    emulator.admin("PUT", "business-events/settings", json={"retry_count": 0})
    down = emulator.admin("POST", "business-events/endpoints", json={"name": "down", "url": refused_url()})
    body = {"event": ALERT, "endpoint": down["id"], "legal_entity": "usmf"}
    emulator.admin("POST", "business-events/activations", json=body)
    for _ in range(3):
        emulator.admin("POST", "business-events/raise", json={"event": ALERT, "legal_entity": "usmf"})

    def errors() -> list[dict[str, Any]]:
        return list(emulator.admin("GET", "business-events/errors")["errors"])

    _wait_until(lambda: len(errors()) == 3, "three failed events in the error log")
    first, *others = errors()
    deleted = _raw(emulator, "DELETE", f"business-events/errors/{first['id']}")
    assert deleted.status_code == 204
    assert sorted(e["id"] for e in errors()) == sorted(e["id"] for e in others)
    assert _raw(emulator, "GET", f"business-events/errors/{first['id']}").status_code == 404
    assert emulator.admin("DELETE", "business-events/errors") == {"errors": []}
    assert errors() == []


# -- connector -----------------------------------------------------------------------------------------------


def test_connector_activity_delete(reset_after: EmulatorInfo) -> None:
    emulator = reset_after
    created = emulator.admin(
        "POST",
        "connector/activities",
        json={"name": "Import vendors", "direction": "import", "job_type": "File",
              "data_project": "Vendors import", "entity": "Vendors V2"},
    )  # fmt: skip
    activity_id = created["activity_id"]
    assert _raw(emulator, "DELETE", f"connector/activities/{activity_id}").status_code == 204
    listed = [a["activity_id"] for a in emulator.admin("GET", "connector/activities")["activities"]]
    assert activity_id not in listed
    assert _raw(emulator, "GET", f"connector/activities/{activity_id}").status_code == 404
    assert _raw(emulator, "DELETE", f"connector/activities/{activity_id}").status_code == 404


# -- DMF -----------------------------------------------------------------------------------------------------


def test_dmf_executions_one_and_forget_all(reset_after: EmulatorInfo) -> None:
    emulator = reset_after
    emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02})
    with make_transport(emulator) as transport:
        answer = transport.request(
            "POST",
            EXPORT_ACTION,
            json={
                "definitionGroupId": "Customers-Export",
                "packageName": "docs",
                "executionId": "",
                "reExecute": False,
                "legalEntityId": "usmf",
            },
        )
    execution_id = answer.json()["value"]

    def finished() -> dict[str, Any] | None:
        one: dict[str, Any] = emulator.admin("GET", f"dmf/executions/{execution_id}")
        return one if one["status"] in ("Succeeded", "PartiallySucceeded", "Failed") else None

    execution = _wait_until(finished, "the export to finish")
    assert execution["execution_id"] == execution_id
    assert execution["status"] == "Succeeded"
    assert _raw(emulator, "GET", "dmf/executions/no-such-execution").status_code == 404

    assert emulator.admin("DELETE", "dmf/executions") == {"executions": []}
    assert emulator.admin("GET", "dmf/executions")["executions"] == []
    assert _raw(emulator, "GET", f"dmf/executions/{execution_id}").status_code == 404


def test_dmf_settings_delete_restores_the_start_up_values(reset_after: EmulatorInfo) -> None:
    emulator = reset_after
    start_up = emulator.admin("GET", "dmf/settings")
    changed = emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 4.5, "error_keys_polls": 7})
    assert (changed["step_delay_seconds"], changed["error_keys_polls"]) == (4.5, 7)
    assert emulator.admin("DELETE", "dmf/settings") == start_up
    assert emulator.admin("GET", "dmf/settings") == start_up


def test_dmf_projects_and_entities(reset_after: EmulatorInfo) -> None:
    emulator = reset_after
    entities = {e["entity"]: e for e in emulator.admin("GET", "dmf/entities")["entities"]}
    assert entities["Customers V3"]["entity_set"] == "CustomersV3"
    assert "CUSTOMERACCOUNT" in entities["Customers V3"]["keys"]
    assert entities["Customer groups"]["staging_fields"]

    def projects() -> dict[str, dict[str, Any]]:
        return {p["definition_group"]: p for p in emulator.admin("GET", "dmf/projects")["projects"]}

    seeded = projects()["Customers-Export"]
    assert [e["entity"] for e in seeded["entities"]] == ["Customer groups", "Customers V3"]
    emulator.admin(
        "PUT",
        "dmf/projects/Customers-XML",
        json={
            "operation": "Export",
            "entities": [{"entity": "Customers V3", "source_format": "XML-Element"}],
        },
    )
    assert "Customers-XML" in projects()
    assert _raw(emulator, "DELETE", "dmf/projects/Customers-XML").status_code == 204
    assert "Customers-XML" not in projects()
    assert _raw(emulator, "DELETE", "dmf/projects/Customers-XML").status_code == 404
