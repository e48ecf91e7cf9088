"""End to end through the local runner (``python -m runner`` serving the real ``function_app``): a file
dropped into Azurite's inbound container is picked up by the blob trigger, imported into the emulator,
finished by the monitor timer, and ends archived beside its status record; the rows are visible in OData."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from azure.storage.blob import BlobServiceClient

from localstack.processes import ROOT
from tests.integration.test_imports_stack import PACKAGE_ROUTE, customer_groups_csv, stack_env
from tests.support.app_functions import deployed_functions
from tests.support.d365 import make_transport
from tests.support.runner_process import runner_command, runner_process, write_local_settings
from tests.support.stack import AzuriteInfo, EmulatorInfo

IMPORT_FUNCTIONS = {"import_inbound_file", "import_monitor"}


def other_functions() -> list[str]:
    return [name for name in deployed_functions() if name not in IMPORT_FUNCTIONS]


@contextmanager
def runner(tmp_path: Path, settings: dict[str, str]) -> Iterator[tuple[dict[str, Any], list[str]]]:
    settings_file = write_local_settings(tmp_path / "local.settings.json", settings)
    command = runner_command(
        "function_app:app", ROOT, settings_file,
        "--blob-poll-interval", "0.3", "--standby-interval", "0.3",
        "--host-id", f"imports-e2e-{int(time.time() * 1000)}",
    )  # fmt: skip
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(tmp_path)}
    with runner_process(command, env, ready_timeout=60) as (_process, info, output):
        yield info, output


def test_a_dropped_file_is_imported_and_archived_through_the_runner(
    clean_emulator: EmulatorInfo, azurite: AzuriteInfo, tmp_path: Path
) -> None:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.05})
    settings = stack_env(
        clean_emulator,
        azurite,
        IMPORT_ROUTES=json.dumps([PACKAGE_ROUTE]),
        IMPORT_MONITOR_SCHEDULE="*/1 * * * * *",
        IMPORT_RETRY_AFTER_MINUTES="10",
        **{f"AzureWebJobs.{name}.Disabled": "true" for name in other_functions()},
    )
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    archive = service.get_container_client(settings["IMPORT_ARCHIVE_CONTAINER"])
    with runner(tmp_path, settings) as (info, output):
        assert {b["function"] for b in info["blobs"]} == {"import_inbound_file"}, info
        inbound = service.get_container_client(settings["IMPORT_INBOUND_CONTAINER"])
        inbound.upload_blob("groups/e2e groups.csv", customer_groups_csv("1", "2", prefix="E2E"))
        deadline = time.monotonic() + 60
        names: list[str] = []
        while time.monotonic() < deadline:
            names = sorted(b.name for b in archive.list_blobs()) if archive.exists() else []
            if len(names) >= 2 and any(n.endswith(".status.json") for n in names):  # file and status
                break
            time.sleep(0.3)
        assert len(names) == 2, "".join(output[-40:])
    status = json.loads(archive.download_blob(names[1]).readall())
    assert names[0].endswith("/e2e groups.csv")
    assert status["outcome"] == "succeeded"
    assert status["subject"] == f"{settings['IMPORT_INBOUND_CONTAINER']}/groups/e2e groups.csv"
    assert status["d365"]["status"] == "Succeeded"
    with make_transport(clean_emulator) as transport:
        rows = transport.request(
            "GET", "data/CustomerGroups", params={"$filter": "CustomerGroupId eq 'E2E*'"}
        ).json()["value"]
    assert sorted(r["CustomerGroupId"] for r in rows) == ["E2E1", "E2E2"]
    assert not list(inbound.list_blobs())
    service.close()
