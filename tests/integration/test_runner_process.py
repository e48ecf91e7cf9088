"""``python -m runner`` as real processes: SIGTERM mid-invocation; two processes on one storage account."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from localstack.processes import ROOT, AzuriteInfo
from tests.runner_apps.recorder import read_events
from tests.runner_apps.support import blob_service, eventually, receipts, sample_settings, unique
from tests.support.runner_process import runner_command, runner_process, write_local_settings


@contextmanager
def sample_process(
    tmp_path: Path, settings: dict[str, str], *args: str, slow_seconds: float = 1.5
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any], list[str]]]:
    """Start ``python -m runner`` over the sample app with a settings file; yield the process, its READY info
    and its output."""
    settings_file = write_local_settings(tmp_path / f"settings-{unique('s')}.json", settings)
    env = {
        "PATH": "/usr/bin:/bin",
        "RUNNER_TEST_RECORD_DIR": str(tmp_path),
        "RUNNER_TEST_SLOW_SECONDS": str(slow_seconds),
        "PYTHONUNBUFFERED": "1",
    }
    fast_polling = ("--blob-poll-interval", "0.2", "--standby-interval", "0.3")
    with runner_process(sample_command(settings_file, *fast_polling, *args), env) as started:
        yield started


def sample_command(settings_file: Path, *args: str) -> list[str]:
    return runner_command(
        "tests.runner_apps.sample_app:app", ROOT / "tests" / "runner_apps", settings_file, *args
    )


def events(tmp_path: Path, kind: str) -> list[dict[str, Any]]:
    return [e for e in read_events(tmp_path / "events.jsonl") if e["kind"] == kind]


def test_sigterm_lets_in_flight_invocations_finish(azurite: AzuriteInfo, tmp_path: Path) -> None:
    host_id = unique("sigterm")
    settings = sample_settings(azurite, enable=("on_slow",), AzureFunctionsWebHost__hostid=host_id)
    with sample_process(tmp_path, settings, slow_seconds=1.5) as (process, info, output):
        blob_service(azurite).get_blob_client(settings["SLOW_CONTAINER"], "job.txt").upload_blob(b"x")
        assert eventually(lambda: len(events(tmp_path, "slow_blob_started")) == 1)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(requests.get, f"{info['base_url']}/api/slow?s=1.0", timeout=20)
            assert eventually(lambda: len(events(tmp_path, "slow_http_started")) == 1)
            process.send_signal(signal.SIGTERM)
            assert process.wait(20) == 0, "".join(output)
            response = answer.result()
        assert (response.status_code, response.text) == (200, "slept 1.0")
    assert len(events(tmp_path, "slow_blob_finished")) == 1
    assert [m["status"] for m in receipts(azurite, host_id, "on_slow")] == ["complete"]
    assert any("Executed 'Functions.on_slow' (Succeeded" in line for line in output)


def test_work_cut_short_by_sigterm_is_retried_by_the_next_process(
    azurite: AzuriteInfo, tmp_path: Path
) -> None:
    host_id = unique("retry")
    settings = sample_settings(azurite, enable=("on_slow",), AzureFunctionsWebHost__hostid=host_id)
    with sample_process(tmp_path, settings, "--shutdown-timeout", "0.2", slow_seconds=5) as (process, _, out):
        blob_service(azurite).get_blob_client(settings["SLOW_CONTAINER"], "job.txt").upload_blob(b"x")
        assert eventually(lambda: len(events(tmp_path, "slow_blob_started")) == 1)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 1, "".join(out)  # 1: an invocation was abandoned
        assert time.monotonic() - started < 5
    [receipt] = receipts(azurite, host_id, "on_slow")
    assert (receipt["status"], receipt["attempts"]) == ("incomplete", "1")
    with sample_process(tmp_path, settings, slow_seconds=0.1) as (process, _, out):
        assert eventually(lambda: len(events(tmp_path, "slow_blob_finished")) == 1)
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0, "".join(out)
    [receipt] = receipts(azurite, host_id, "on_slow")
    assert (receipt["status"], receipt["attempts"]) == ("complete", "2")


def test_two_processes_share_the_work_and_process_each_blob_once(
    azurite: AzuriteInfo, tmp_path: Path
) -> None:
    host_id = unique("procs")
    settings = sample_settings(azurite, enable=("on_inbound",), AzureFunctionsWebHost__hostid=host_id)
    container = settings["INBOUND_CONTAINER"]
    with (
        sample_process(tmp_path, settings) as (first, first_info, _),
        sample_process(tmp_path, settings) as (second, second_info, _),
    ):
        assert first_info["master_key"] == second_info["master_key"]  # one host, shared keys
        service = blob_service(azurite)
        for index in range(12):
            service.get_blob_client(container, f"n{index:02}.txt").upload_blob(b"x")
        assert eventually(lambda: len(events(tmp_path, "inbound")) >= 12)
        time.sleep(0.8)
        for process in (first, second):
            process.send_signal(signal.SIGTERM)
        assert (first.wait(20), second.wait(20)) == (0, 0)
    names = sorted(e["name"] for e in events(tmp_path, "inbound"))
    assert names == [f"{container}/n{i:02}.txt" for i in range(12)]


def test_a_clear_error_when_storage_is_unreachable(tmp_path: Path) -> None:
    dead = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    settings_file = write_local_settings(tmp_path / "local.settings.json", {"AzureWebJobsStorage": dead})
    result = subprocess.run(
        sample_command(settings_file),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "storage is not reachable" in result.stderr
