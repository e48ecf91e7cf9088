"""``python -m ops check`` and ``python -m ops query`` as real processes against the emulator and Azurite."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

from localstack.processes import ROOT
from tests.support.app_env import stack_env
from tests.support.runner_process import write_local_settings
from tests.support.stack import AzuriteInfo, EmulatorInfo, free_port


def run_ops(settings: dict[str, str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    settings_file = write_local_settings(tmp_path / "local.settings.json", settings)
    # The file's values must be what the command sees: drop any the test process happens to have.
    env = {name: value for name, value in os.environ.items() if name not in settings}
    return subprocess.run(
        [sys.executable, "-m", "ops", *args, "--settings", str(settings_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ops: "), result.stderr
    return lines[0]


def test_check_reports_every_dependency_ok(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    settings = stack_env(emulator, azurite, KEY_VAULT_URL=emulator.keyvault_url)
    result = run_ops(settings, tmp_path, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["OK", "settings"],
        ["OK", "d365-token"],
        ["OK", "d365-odata"],
        ["OK", "blob-storage"],
        ["OK", "key-vault"],
    ]
    assert all(line.endswith(" ms)") for line in lines)

    as_json = json.loads(run_ops(settings, tmp_path, "check", "--json").stdout)
    assert as_json["status"] == "ok"
    assert [c["name"] for c in as_json["checks"]][-1] == "key-vault"


def test_check_fails_unreachable_d365_and_keeps_secrets_out(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    settings = stack_env(
        emulator, azurite, D365_BASE_URL=f"http://127.0.0.1:{free_port()}", D365_RETRY_MAX_ATTEMPTS="1"
    )
    result = run_ops(settings, tmp_path, "check", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["status"] == "failing"
    states = {c["name"]: c["ok"] for c in report["checks"]}
    assert states == {"settings": True, "d365-token": True, "d365-odata": False, "blob-storage": True}
    assert emulator.client_secret not in result.stdout + result.stderr

    text = run_ops(settings, tmp_path, "check")
    assert text.returncode == 1
    assert any(line.startswith("FAIL d365-odata") for line in text.stdout.splitlines())


def test_check_lists_every_configuration_problem(tmp_path: Path) -> None:
    settings = {"D365_AUTH_MODE": "client_secret", "D365_RETRY_MAX_ATTEMPTS": "many"}
    result = run_ops(settings, tmp_path, "check")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout.startswith("FAIL settings")
    for name in ("D365_BASE_URL", "AzureWebJobsStorage", "D365_RETRY_MAX_ATTEMPTS", "D365_CLIENT_ID"):
        assert f"- {name}" in result.stdout
    assert "Traceback" not in result.stderr


def test_query_streams_json_lines_and_csv_with_a_filter(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    settings = stack_env(emulator, azurite)
    query = ("query", "LegalEntities", "--filter", "LegalEntityId eq 'USMF' or LegalEntityId eq 'DEMF'")
    result = run_ops(settings, tmp_path, *query)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["LegalEntityId"] for r in rows) == ["DEMF", "USMF"]

    output = tmp_path / "entities.csv"
    result = run_ops(
        settings,
        tmp_path,
        *query,
        "--select",
        "LegalEntityId,Name",
        "--format",
        "csv",
        "--output",
        str(output),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    table = list(csv.reader(io.StringIO(output.read_text(encoding="utf-8"))))
    assert table[0] == ["LegalEntityId", "Name"]
    assert sorted(row[0] for row in table[1:]) == ["DEMF", "USMF"]
    assert not (tmp_path / "entities.csv.partial").exists()

    header_from_rows = run_ops(settings, tmp_path, "query", "LegalEntities", "--top", "1", "--format", "csv")
    first = list(csv.reader(io.StringIO(header_from_rows.stdout)))
    assert len(first) == 2
    assert "LegalEntityId" in first[0]
    assert not any("@" in c for c in first[0])


def test_query_errors_are_one_line_without_a_traceback(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    settings = stack_env(emulator, azurite)
    output = tmp_path / "never.jsonl"
    result = run_ops(settings, tmp_path, "query", "NoSuchEntities", "--output", str(output))
    assert result.returncode == 1
    line = assert_one_error_line(result)
    assert "NoSuchEntities" in line
    assert not output.exists()
    assert not (tmp_path / "never.jsonl.partial").exists()

    bad_filter = run_ops(settings, tmp_path, "query", "LegalEntities", "--filter", "LegalEntityId eq")
    assert bad_filter.returncode == 1
    assert_one_error_line(bad_filter)

    unconfigured = run_ops({"D365_RETRY_MAX_ATTEMPTS": "many"}, tmp_path, "query", "LegalEntities")
    assert unconfigured.returncode == 2
    line = assert_one_error_line(unconfigured)
    assert "D365_BASE_URL" in line
    assert "D365_RETRY_MAX_ATTEMPTS" in line

    port = free_port()
    closed = stack_env(
        emulator, azurite, D365_BASE_URL=f"http://127.0.0.1:{port}", D365_RETRY_MAX_ATTEMPTS="1"
    )
    unreachable = run_ops(closed, tmp_path, "query", "LegalEntities")
    assert unreachable.returncode == 1
    assert (
        "D365ConnectionError" in assert_one_error_line(unreachable) or "connect" in unreachable.stderr.lower()
    )
    assert emulator.client_secret not in unreachable.stderr
