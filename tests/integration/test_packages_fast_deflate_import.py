"""A package deflated by ISA-L (``isal``), in several primed pieces, is imported by the emulator's DMF over
HTTP (its Azurite SAS blob), row for row — and so is the stdlib-zlib fallback's."""

from __future__ import annotations

import io
import uuid

import pytest

from shared.d365.dmf import DmfClient, ExecutionStatus
from shared.d365.odata import ODataClient
from shared.packages.build import EntityFile, build_package
from shared.packages.parallel_deflate import DEFAULT_DEFLATE_CHUNK, fast_deflate_available
from tests.integration.test_dmf_client import FAST, dmf, dmf_emulator, odata, transport

__all__ = ["dmf", "dmf_emulator", "odata", "transport"]  # the fixtures, re-exported for pytest

ROWS = 30_000  # ~2.6 MB of UTF-16: two deflate pieces, the second primed by the first


def package(prefix: str, *, fast: bool) -> tuple[bytes, str]:
    lines = ["CUSTOMERGROUPID,DESCRIPTION"]
    lines += [f"{prefix}{n:05d},Group {n} {'x' * (n % 48)}" for n in range(ROWS)]  # Description: 60 chars
    sink = io.BytesIO()
    built = build_package(
        sink,
        [EntityFile("Customer groups", "groups.csv", io.BytesIO(("\n".join(lines) + "\n").encode()))],
        definition_group="Client test groups",
        fast_deflate=fast,
    )
    assert built.entities[0].output_bytes > DEFAULT_DEFLATE_CHUNK  # more than one deflate piece
    return sink.getvalue(), built.deflate


@pytest.mark.parametrize("fast", [True, False], ids=["isal", "zlib"])
def test_the_emulator_imports_a_package_from_either_deflate_engine(
    fast: bool, dmf: DmfClient, odata: ODataClient
) -> None:
    if fast and not fast_deflate_available():
        pytest.skip("isal is not installed")
    prefix = "I" if fast else "Z"
    data, engine = package(prefix, fast=fast)
    assert engine == ("isal" if fast else "zlib")
    target = dmf.get_azure_write_url(f"{uuid.uuid4()}.zip")
    dmf.upload_package(target, io.BytesIO(data))
    execution_id = f"fast-deflate-{uuid.uuid4()}"
    dmf.import_from_package(target.blob_url, "Client test groups", execution_id, legal_entity_id="usmf")
    assert dmf.wait_for_execution(execution_id, FAST) is ExecutionStatus.SUCCEEDED
    assert dmf.execution_errors(execution_id) == []
    imported = odata.count(
        "CustomerGroups",
        filter=f"dataAreaId eq 'usmf' and CustomerGroupId eq '{prefix}*'",  # D365's wildcard
        cross_company=True,
    )
    assert imported == ROWS
    last = odata.get(
        "CustomerGroups",
        {"dataAreaId": "usmf", "CustomerGroupId": f"{prefix}{ROWS - 1:05d}"},
        cross_company=True,
    )
    assert last["Description"] == f"Group {ROWS - 1} {'x' * ((ROWS - 1) % 48)}"
