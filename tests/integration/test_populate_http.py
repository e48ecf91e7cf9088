"""The HTTP populate function through the local runner (``python -m runner`` serving the real
``function_app``): function key, good input with per-record results, a repeat, oversized and malformed
input, allow-listing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from localstack.processes import ROOT
from shared.context import reset_context
from tests.integration.test_imports_runner import other_functions
from tests.support.app_env import stack_env
from tests.support.app_functions import deployed_functions
from tests.support.d365 import faults
from tests.support.runner_process import runner_command, runner_process, write_local_settings
from tests.support.stack import AzuriteInfo, EmulatorInfo

TARGETS = [
    {"name": "groups", "entity_set": "CustomerGroups", "mode": "upsert", "legal_entity": "usmf",
     "legal_entity_from_request": True},
    {"name": "customers", "entity_set": "CustomersV3", "mode": "create", "legal_entity": "usmf",
     "max_records": 3},
]  # fmt: skip


class Served:
    def __init__(self, info: dict[str, Any], output: list[str]) -> None:
        self.info, self.output = info, output
        keys = info["function_keys"].get("populate_records", {})
        self.key = keys.get("default") or info["host_keys"]["default"]

    def post(
        self, target: str, body: bytes | Any, *, key: str | None = "", **params: str
    ) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["x-functions-key"] = key or self.key
        url = f"{self.info['base_url']}/api/populate/{target}"
        return requests.post(url, data=data, headers=headers, params=params, timeout=30)


@pytest.fixture(scope="module")
def served(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("populate-http")
    disabled = {f"AzureWebJobs.{n}.Disabled": "true" for n in other_functions() if n != "populate_records"}
    settings = stack_env(
        emulator,
        azurite,
        POPULATE_HTTP_TARGETS=json.dumps(TARGETS),
        POPULATE_HTTP_MAX_BYTES="4096",
        **disabled,
    )
    settings_file = write_local_settings(Path(tmp) / "local.settings.json", settings)
    command = runner_command(
        "function_app:app", ROOT, settings_file, "--host-id", f"populate-{int(time.time() * 1000)}"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(tmp)}
    with runner_process(command, env, ready_timeout=60) as (_process, info, output):
        yield Served(info, output)


def test_good_records_are_written_and_answered_per_record(served: Served, emulator: EmulatorInfo) -> None:
    emulator.admin("POST", "reset")
    records = [
        {"CustomerGroupId": "H1", "Description": "From HTTP"},
        {"CustomerGroupId": "10", "Description": "Renamed"},
    ]
    response = served.post("groups", records)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outcome"] == "succeeded"
    assert [(r["key"]["CustomerGroupId"], r["outcome"]) for r in body["records"]] == [
        ("H1", "created"),
        ("10", "updated"),
    ]
    again = served.post("groups", {"records": records})  # a repeated request changes nothing
    assert [r["outcome"] for r in again.json()["records"]] == ["unchanged", "unchanged"]
    other = served.post("groups", records[:1], legal_entity="DEMF")
    assert other.json()["records"][0]["key"] == {"dataAreaId": "demf", "CustomerGroupId": "H1"}


def test_a_failed_record_is_reported_with_d365s_message(served: Served, emulator: EmulatorInfo) -> None:
    emulator.admin("POST", "reset")
    records = [
        {"CustomerAccount": "HT-1", "CustomerGroupId": "10"},
        {"CustomerAccount": "HT-2", "CustomerGroupId": "ZZ"},
    ]
    response = served.post("customers", records)
    assert response.status_code == 207
    body = response.json()
    assert body["outcome"] == "partially_succeeded"
    assert body["counts"]["created"] == 1
    assert "not found in the relating table" in body["records"][1]["error"]


def test_oversized_input_is_413_with_a_clear_message(served: Served) -> None:
    too_many = [{"CustomerAccount": f"X-{n}"} for n in range(4)]
    response = served.post("customers", too_many)
    assert response.status_code == 413
    assert "more than 3 records" in response.json()["error"]
    big = [{"CustomerGroupId": "B", "Description": "x" * 5000}]
    response = served.post("groups", big)
    assert response.status_code == 413
    assert "POPULATE_HTTP_MAX_BYTES" in response.json()["error"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"{not json", "not valid UTF-8 JSON"), (b'{"records": 5}', "JSON array"),
     (b"[1, 2]", "record 1 is not a JSON object"), (b"[]", "no records")],
)  # fmt: skip
def test_malformed_input_is_400(served: Served, body: bytes, expected: str) -> None:
    response = served.post("groups", body)
    assert response.status_code == 400
    assert expected in response.json()["error"]


def test_only_allow_listed_targets_and_only_with_a_function_key(served: Served) -> None:
    response = served.post("VendorsV2", [{"VendorAccountNumber": "V"}])
    assert response.status_code == 404
    assert response.json()["allowed"] == ["customers", "groups"]
    assert served.post("groups", [{"CustomerGroupId": "K"}], key=None).status_code == 401
    assert served.post("groups", [{"CustomerGroupId": "K"}], key="not-the-key").status_code == 401
    fixed = served.post("customers", [{"CustomerAccount": "K-1"}], legal_entity="demf")
    assert fixed.status_code == 400
    assert "writes to legal entity 'usmf' only" in fixed.json()["error"]
    bad = served.post("groups", [{"CustomerGroupId": "K"}], legal_entity="u$mf")
    assert bad.status_code == 400
    assert bad.json()["error"] == "legal_entity 'u$mf' must be 1-10 letters or digits"
    # the company comes from the target or the request, never from a record
    other = served.post("customers", [{"CustomerAccount": "K-2", "dataAreaId": "demf"}])
    assert other.status_code == 207
    assert "writes to legal entity 'usmf' only" in other.json()["records"][0]["error"]


def test_d365_unavailable_is_503_with_retry_after(served: Served, emulator: EmulatorInfo) -> None:
    emulator.admin("POST", "reset")
    rule = {"family": "odata", "path_prefix": "/data/$batch", "error_rate": 1, "error_status": 503}
    faults(emulator, rule)
    try:
        response = served.post("groups", [{"CustomerGroupId": "U1"}])
    finally:
        faults(emulator)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "30"
    body = response.json()
    assert [r["outcome"] for r in body["records"]] == ["not_attempted"]
    assert "send the same request again later" in body["error"]


def test_an_invalid_populate_setting_is_503_naming_it(
    emulator: EmulatorInfo, azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in stack_env(emulator, azurite).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POPULATE_HTTP_TARGETS", json.dumps(TARGETS))
    monkeypatch.setenv("POPULATE_HTTP_MAX_RECORDS", "lots")
    reset_context()
    try:
        request = func.HttpRequest(
            method="POST",
            url="http://localhost/api/populate/groups",
            headers={"Content-Type": "application/json"},
            params={},
            route_params={"target": "groups"},
            body=b'[{"CustomerGroupId": "X1"}]',
        )
        response = deployed_functions()["populate_records"](request)
    finally:
        reset_context()
    assert response.status_code == 503
    body = json.loads(response.get_body())
    assert body["error"] == "the app is misconfigured"
    assert any("POPULATE_HTTP_MAX_RECORDS" in problem for problem in body["problems"])
