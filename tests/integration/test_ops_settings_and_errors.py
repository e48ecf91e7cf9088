"""``python -m ops`` as real processes: the sample settings' managed identity, one logging set-up for every
command (one ``ops:`` line per error, ``-v`` for the log) and ``replay-events`` guarded like the others."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from azure.storage.blob import BlobServiceClient

from localstack.processes import ROOT
from tests.integration.test_ops_cli import assert_one_error_line, run_ops
from tests.support.app_env import stack_env
from tests.support.stack import AzuriteInfo, EmulatorInfo, free_port


def sample_settings(emulator: EmulatorInfo, azurite: AzuriteInfo, **overrides: str) -> dict[str, str]:
    """local.settings.sample.json as shipped (managed identity), pointed at this run's stack as
    ``python -m demo`` points it."""
    sample = json.loads((ROOT / "local.settings.sample.json").read_text(encoding="utf-8"))["Values"]
    assert sample["D365_AUTH_MODE"] == "managed_identity"
    return {
        **sample,
        "D365_BASE_URL": emulator.base_url,
        "IDENTITY_ENDPOINT": emulator.identity_endpoint,
        "IDENTITY_HEADER": emulator.identity_header,
        "TLS_CA_BUNDLE": emulator.ca_file,
        "KEY_VAULT_URL": emulator.keyvault_url,
        "AzureWebJobsStorage": azurite.connection_string,
        **overrides,
    }


def test_the_sample_settings_managed_identity_works(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    settings = sample_settings(emulator, azurite)
    checked = run_ops(settings, tmp_path, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert [line.split()[:2] for line in checked.stdout.splitlines()] == [
        ["OK", "settings"],
        ["OK", "d365-token"],
        ["OK", "d365-odata"],
        ["OK", "blob-storage"],
        ["OK", "key-vault"],
    ]
    rows = run_ops(settings, tmp_path, "query", "LegalEntities", "--top", "1")
    assert rows.returncode == 0, rows.stderr
    assert len(rows.stdout.splitlines()) == 1
    assert emulator.identity_header not in checked.stdout + checked.stderr + rows.stderr


def test_an_error_after_retries_is_one_line_and_verbose_shows_the_retries(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    closed = stack_env(
        emulator,
        azurite,
        D365_BASE_URL=f"http://127.0.0.1:{free_port()}",
        D365_RETRY_MAX_ATTEMPTS="3",
        D365_RETRY_BACKOFF_BASE_SECONDS="0.01",
    )
    quiet = run_ops(closed, tmp_path, "query", "LegalEntities")
    assert quiet.returncode == 1
    assert "LegalEntities" in assert_one_error_line(quiet)

    verbose = run_ops(closed, tmp_path, "query", "LegalEntities", "-v")
    assert verbose.returncode == 1
    lines = verbose.stderr.strip().splitlines()
    assert len([line for line in lines if "retrying in" in line]) == 2, verbose.stderr
    assert lines[-1].startswith("ops: ")
    assert emulator.client_secret not in verbose.stderr


def test_replay_events_errors_are_one_line(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    invalid = run_ops({"D365_RETRY_MAX_ATTEMPTS": "many"}, tmp_path, "replay-events")
    assert invalid.returncode == 2
    line = assert_one_error_line(invalid)
    assert "D365_BASE_URL" in line
    assert "D365_RETRY_MAX_ATTEMPTS" in line

    missing = subprocess.run(
        [sys.executable, "-m", "ops", "replay-events", "--settings", str(tmp_path / "absent.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "absent.json does not exist" in assert_one_error_line(missing)

    dead_account = azurite.connection_string.replace(f":{azurite.blob_port}/", f":{free_port()}/")
    assert dead_account != azurite.connection_string
    no_storage = stack_env(emulator, azurite, AzureWebJobsStorage=dead_account)
    started = time.monotonic()
    unreachable = run_ops(no_storage, tmp_path, "replay-events")
    assert unreachable.returncode == 1
    assert "ServiceRequestError" in assert_one_error_line(unreachable)
    assert time.monotonic() - started < 30  # bounded storage retries for a command someone waits for


def test_replay_events_reads_without_creating_the_poison_container(
    emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    poison = f"poison-{free_port()}"
    settings = stack_env(emulator, azurite, BUSINESS_EVENTS_POISON_CONTAINER=poison)
    everything = run_ops(settings, tmp_path, "replay-events")
    assert everything.returncode == 0, everything.stderr
    assert json.loads(everything.stdout) == {
        "replayed": 0, "processed": 0, "results": [], "not_found": [], "remaining": False,
    }  # fmt: skip
    one = run_ops(settings, tmp_path, "replay-events", "--event-id", "{5D8A0C0E-1B7E-4E38-9D7B-1C2B3A4D5E6F}")
    assert one.returncode == 1
    assert json.loads(one.stdout)["not_found"] == ["5D8A0C0E-1B7E-4E38-9D7B-1C2B3A4D5E6F"]
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    try:
        assert not service.get_container_client(poison).exists()
    finally:
        service.close()
