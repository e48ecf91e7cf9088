"""The emulator's DMF package API over real HTTP with a real token, packages in real Azurite (ref §3, §7)."""

from __future__ import annotations

import csv
import io
import json
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shared.d365.errors import D365ClientError, D365NotFoundError, D365ServerError
from shared.d365.transport import D365Transport
from tests.support.d365 import make_transport
from tests.support.stack import EmulatorInfo

ACTIONS = "data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
NS = 'xmlns:i="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://schemas.microsoft.com/dynamics/2015/01/DataManagement"'
FINAL = {"Succeeded", "PartiallySucceeded", "Failed", "Canceled"}


# --- helpers: packages as a third-party generator writes them (ref §7.3), the action calls -----------------


def csv_unicode(rows: Sequence[Sequence[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return b"\xff\xfe" + buffer.getvalue().encode("utf-16-le")


def package(*entities: tuple[str, str, bytes, Sequence[str]], group: str = "Test-Import") -> bytes:
    """A data package: (DMF entity name, source format, data file bytes, mapped columns) per entity."""
    items, files = [], {}
    for level, (name, fmt, data, columns) in enumerate(entities, start=1):
        file_name = f"{name}.{'xlsx' if fmt == 'EXCEL' else 'csv'}"
        files[file_name] = data
        maps = "".join(
            f"<EntityMap><ArrayIndex>0</ArrayIndex><EntityField>{c}</EntityField>"
            f'<EntityFieldConversionList i:nil="true" /><XMLField>{c}</XMLField></EntityMap>'
            for c in columns
        )
        items.append(
            f"<DataManagementPackageEntityData><EntityMapList>{maps}</EntityMapList>"
            f"<EntityName>{name}</EntityName><ExecutionUnit>1</ExecutionUnit><InputFilePath>{file_name}"
            f"</InputFilePath><LevelInExecutionUnit>{level}</LevelInExecutionUnit><SequenceInLevel>1"
            f"</SequenceInLevel><SourceFormat>{fmt}</SourceFormat></DataManagementPackageEntityData>"
        )
    manifest = (
        f"<DataManagementPackageManifest {NS}><DefinitionGroupName>{group}</DefinitionGroupName>"
        f"<PackageEntityList>{''.join(items)}</PackageEntityList></DataManagementPackageManifest>"
    )
    header = (
        f"<DataManagementPackageHeader {NS}><PackageVersion>2</PackageVersion></DataManagementPackageHeader>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("Manifest.xml", b"\xff\xfe" + manifest.encode("utf-16-le"))
        archive.writestr("PackageHeader.xml", header.encode("utf-8"))
    return buffer.getvalue()


def call(transport: D365Transport, action: str, **parameters: Any) -> Any:
    response = transport.request("POST", ACTIONS + action, json=parameters)
    body = response.json()
    assert body["@odata.context"].endswith(("#Edm.String", "#Edm.Boolean"))
    return body["value"]


def upload(transport: D365Transport, data: bytes) -> str:
    write = json.loads(call(transport, "GetAzureWriteUrl", uniqueFileName=f"test-{time.monotonic_ns()}"))
    assert write["BlobId"].startswith("{")
    assert write["BlobId"].endswith("}")
    transport.request(
        "PUT", write["BlobUrl"], data=data, headers={"x-ms-blob-type": "BlockBlob"}, authenticate=False
    )
    return str(write["BlobUrl"])


def import_package(transport: D365Transport, data: bytes, **overrides: Any) -> str:
    parameters = {
        "packageUrl": upload(transport, data),
        "definitionGroupId": "",
        "executionId": "",
        "execute": True,
        "overwrite": True,
        "legalEntityId": "usmf",
        **overrides,
    }
    return str(call(transport, "ImportFromPackage", **parameters))


def wait_final(transport: D365Transport, execution_id: str, seen: list[str] | None = None) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = str(call(transport, "GetExecutionSummaryStatus", executionId=execution_id))
        if seen is not None and (not seen or seen[-1] != status):
            seen.append(status)
        if status in FINAL:
            return status
        time.sleep(0.02)
    raise AssertionError(f"execution {execution_id} did not finish")


def download(transport: D365Transport, url: str) -> bytes:
    assert url.startswith("http")
    assert "sig=" in url
    return transport.request("GET", url, authenticate=False).content


@pytest.fixture
def dmf(clean_emulator: EmulatorInfo) -> Iterator[D365Transport]:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02, "error_keys_polls": 2})
    transport = make_transport(clean_emulator)
    yield transport
    transport.close()


# --- imports -----------------------------------------------------------------------------------------------


def test_microsofts_sample_package_imports_through_the_whole_flow(dmf, clean_emulator, samples_dir: Path):
    data = (samples_dir / "packages" / "usmf_asset-major-types-01.zip").read_bytes()
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.1})
    execution_id = import_package(dmf, data, executionId="asset-types-1")
    assert execution_id == "asset-types-1"
    seen: list[str] = []
    assert wait_final(dmf, execution_id, seen) == "Succeeded"
    assert seen[:2] == ["NotRun", "Executing"]

    rows = dmf.request("GET", "data/FixedAssetMajorTypes", params={"$orderby": "MajorTypeId"}).json()["value"]
    assert [r["MajorTypeId"] for r in rows][:3] == ["COMP", "DEV_LAND", "LEASE_BUILD"]
    assert len(rows) == 11
    assert rows[0]["Description"] == "Computer hardware"
    statuses = json.loads(call(dmf, "GetEntityExecutionSummaryStatusList", executionId=execution_id))
    assert statuses[0]["EntityName"] == "Fixed asset major type"
    assert (statuses[0]["StagingRecords"], statuses[0]["TargetRecords"], statuses[0]["TargetStatus"]) == (
        11,
        11,
        "Finished",
    )
    assert json.loads(call(dmf, "GetExecutionErrors", executionId=execution_id)) == []
    assert (
        call(
            dmf,
            "GenerateImportTargetErrorKeysFile",
            executionId=execution_id,
            entityName="Fixed asset major type",
        )
        is False
    )
    assert "DMFExecutionSummary" in call(dmf, "GetExecutionSummaryPageUrl", executionId=execution_id)
    # overwrite=true made the data project from the manifest; the job is visible through OData too
    project = dmf.request("GET", "data/DataManagementDefinitionGroups('Asset-Major-Types')").json()
    assert project["OperationType"] == "Import"
    jobs = dmf.request(
        "GET", "data/DataManagementExecutionJobDetails", params={"$filter": f"JobId eq '{execution_id}'"}
    )
    assert jobs.json()["value"][0]["TargetRecordsCreatedCount"] == 11

    # the same package again updates the rows instead of duplicating them
    again = import_package(dmf, data)
    assert wait_final(dmf, again) == "Succeeded"
    detail = json.loads(call(dmf, "GetEntityExecutionSummaryStatusList", executionId=again))[0]
    assert detail["TargetRecords"] == 11
    assert dmf.request("GET", "data/FixedAssetMajorTypes/$count").text.lstrip("\ufeff") == "11"


CUSTOMER_COLUMNS = [
    "CUSTOMERACCOUNT",
    "ORGANIZATIONNAME",
    "CUSTOMERGROUPID",
    "CREDITLIMIT",
    "SALESCURRENCYCODE",
]


def test_bad_rows_leave_a_partially_succeeded_job_with_errors_and_error_keys(dmf):
    rows = [
        CUSTOMER_COLUMNS,
        ["DMF-001", 'Contoso "Quoted" Ltd', "10", "1000.50", "USD"],
        ["DMF-002", "Line\r\nbreak Inc", "20", "0", "USD"],
        ["DMF-003", "No such group", "NOPE", "10", "USD"],  # foreign key -> target error
        ["DMF-004", "Missing group", "", "10", "USD"],  # mandatory field -> target error
        ["DMF-005", "Bad number", "10", "ten", "USD"],  # type -> staging error
        ["DMF-001", "Duplicate key", "10", "1", "USD"],  # duplicate in the file -> staging error
    ]
    data = package(("Customers V3", "CSV-Unicode", csv_unicode(rows), CUSTOMER_COLUMNS))
    execution_id = import_package(dmf, data)
    assert wait_final(dmf, execution_id) == "PartiallySucceeded"

    created = dmf.request("GET", "data/CustomersV3(dataAreaId='usmf',CustomerAccount='DMF-001')").json()
    assert created["OrganizationName"] == 'Contoso "Quoted" Ltd'
    assert created["CreditLimit"] == 1000.5
    raw = call(dmf, "GetExecutionErrors", executionId=execution_id)
    assert isinstance(raw, str)  # a JSON array inside the string value (ref §3.2)
    errors = json.loads(raw)
    group_errors = " | ".join(e["ErrorMessage"] for e in errors if e["Field"] == "CustomerGroupId")
    assert "'NOPE'" in group_errors
    assert "'Customer groups'" in group_errors
    assert "Field 'CustomerGroupId' must be filled in." in group_errors
    assert any(e["Field"] == "CreditLimit" and "'ten'" in e["ErrorMessage"] for e in errors)
    assert any("already exists" in e["ErrorMessage"] for e in errors)
    assert all(e["RecordId"] for e in errors)
    assert any("\n" in e["ErrorMessage"] for e in errors)

    detail = json.loads(call(dmf, "GetEntityExecutionSummaryStatusList", executionId=execution_id))[0]
    assert (detail["StagingRecords"], detail["StagingErrorCount"]) == (4, 2)
    assert (detail["TargetRecords"], detail["TargetErrorCount"]) == (2, 2)

    staging_url = call(
        dmf, "GetImportStagingErrorFileUrl", executionId=execution_id, entityName="Customers V3"
    )
    staging_file = download(dmf, staging_url).decode("utf-8-sig")
    assert "DMF-005" in staging_file
    assert "ERRORMESSAGE" in staging_file

    assert (
        call(dmf, "GetImportTargetErrorKeysFileUrl", executionId=execution_id, entityName="Customers V3")
        == ""
    )
    assert (
        call(dmf, "GenerateImportTargetErrorKeysFile", executionId=execution_id, entityName="Customers V3")
        is True
    )
    answers = [
        call(dmf, "GetImportTargetErrorKeysFileUrl", executionId=execution_id, entityName="Customers V3")
        for _ in range(3)
    ]
    assert answers[:2] == ["", ""]
    keys = list(csv.reader(io.StringIO(download(dmf, answers[2]).decode("utf-8-sig"))))
    assert keys == [["CUSTOMERACCOUNT"], ["DMF-003"], ["DMF-004"]]


def test_all_rows_failing_fails_the_job(dmf):
    rows = [CUSTOMER_COLUMNS, ["DMF-101", "Nobody", "NOPE", "1", "USD"]]
    execution_id = import_package(
        dmf, package(("Customers V3", "CSV-Unicode", csv_unicode(rows), CUSTOMER_COLUMNS))
    )
    assert wait_final(dmf, execution_id) == "Failed"


def test_csv_unicode_in_the_wrong_encoding_fails_with_d365s_message(dmf):
    utf8 = b"CUSTOMERGROUPID,DESCRIPTION\r\nDMF1,Wrong encoding\r\n"
    execution_id = import_package(
        dmf, package(("Customer groups", "CSV-Unicode", utf8, ["CUSTOMERGROUPID", "DESCRIPTION"]))
    )
    assert wait_final(dmf, execution_id) == "Failed"
    errors = json.loads(call(dmf, "GetExecutionErrors", executionId=execution_id))
    assert "Selected file is not Unicode" in errors[0]["ErrorMessage"]

    lf_only = b"\xff\xfe" + "CUSTOMERGROUPID,DESCRIPTION\nDMF1,LF only\n".encode("utf-16-le")
    execution_id = import_package(
        dmf, package(("Customer groups", "CSV-Unicode", lf_only, ["CUSTOMERGROUPID", "DESCRIPTION"]))
    )
    assert wait_final(dmf, execution_id) == "Failed"
    assert "mapping is incorrect" in call(dmf, "GetExecutionErrors", executionId=execution_id)


def test_execute_false_stops_after_staging(dmf):
    rows = [["CUSTOMERGROUPID", "DESCRIPTION"], ["STG1", "Staged only"]]
    data = package(("Customer groups", "CSV-Unicode", csv_unicode(rows), rows[0]))
    execution_id = import_package(dmf, data, execute=False)
    assert wait_final(dmf, execution_id) == "Succeeded"
    detail = json.loads(call(dmf, "GetEntityExecutionSummaryStatusList", executionId=execution_id))[0]
    assert (detail["StagingRecords"], detail["TargetStatus"]) == (1, "NotRun")
    with pytest.raises(D365NotFoundError):
        dmf.request("GET", "data/CustomerGroups(dataAreaId='usmf',CustomerGroupId='STG1')")


def test_a_second_import_while_one_runs_fails(dmf, clean_emulator):
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.25})
    rows = [["CUSTOMERGROUPID", "DESCRIPTION"], ["PAR1", "Parallel"]]
    data = package(("Customer groups", "CSV-Unicode", csv_unicode(rows), rows[0]))
    first = import_package(dmf, data)
    with pytest.raises(D365ServerError) as caught:
        import_package(dmf, data)
    message = caught.value.inner_message or ""
    assert "must not be called in parallel" in message
    assert first in message
    assert wait_final(dmf, first) == "Succeeded"
    assert wait_final(dmf, import_package(dmf, data)) == "Succeeded"  # fine once the first one ended


def test_packages_the_environment_cannot_take_are_refused(dmf):
    odata_name = package(("CustomersV3", "CSV-Unicode", csv_unicode([["A"], ["1"]]), ["A"]))
    with pytest.raises(D365ClientError) as caught:
        import_package(dmf, odata_name)
    assert caught.value.status_code == 400
    assert caught.value.inner_message == "Entity CustomersV3 does not exist in the target environment"
    with pytest.raises(D365ClientError, match="not a valid zip"):
        import_package(dmf, b"not a zip at all")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.csv", "x")
    with pytest.raises(D365ClientError, match=r"does not contain Manifest\.xml"):
        import_package(dmf, buffer.getvalue())


def test_unknown_execution_ids(dmf):
    assert call(dmf, "GetExecutionSummaryStatus", executionId="no-such-job") == "Unknown"
    with pytest.raises(D365ClientError, match="were not found"):
        call(dmf, "GetExecutionErrors", executionId="no-such-job")
    with pytest.raises(D365ClientError, match="were not found"):
        call(dmf, "GetExportedPackageUrl", executionId="no-such-job")
    assert (
        call(dmf, "GetExecutionIdByMessageId", _messageId="no-such-message")
        == "00000000-0000-0000-0000-000000000000"
    )


def test_admin_forces_a_final_status_and_can_hide_new_executions(dmf, clean_emulator):
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.5, "status_not_found_polls": 1})
    rows = [["CUSTOMERGROUPID", "DESCRIPTION"], ["CAN1", "Canceled"]]
    execution_id = import_package(
        dmf, package(("Customer groups", "CSV-Unicode", csv_unicode(rows), rows[0]))
    )
    with pytest.raises(D365ClientError, match="were not found"):  # before "the execution row exists"
        call(dmf, "GetExecutionSummaryStatus", executionId=execution_id)
    forced = clean_emulator.admin(
        "POST", f"dmf/executions/{execution_id}/status", json={"status": "Canceled"}
    )
    assert forced["execution_id"] == execution_id
    assert wait_final(dmf, execution_id) == "Canceled"
    listed = clean_emulator.admin("GET", "dmf/executions")["executions"]
    assert [e["status"] for e in listed if e["execution_id"] == execution_id] == ["Canceled"]


# --- exports -----------------------------------------------------------------------------------------------


def test_export_builds_a_real_package_that_imports_into_another_company(dmf, clean_emulator):
    clean_emulator.admin(
        "PUT",
        "dmf/projects/Customers-XML",
        json={
            "operation": "Export",
            "entities": [
                {"entity": "Customer groups", "source_format": "EXCEL"},
                {"entity": "Customers V3", "source_format": "XML-Element"},
            ],
        },
    )
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.1})
    execution_id = call(
        dmf,
        "ExportToPackage",
        definitionGroupId="Customers-XML",
        packageName="customers",
        executionId="",
        reExecute=False,
        legalEntityId="usmf",
    )
    assert call(dmf, "GetExportedPackageUrl", executionId=execution_id) == ""  # not ready yet
    assert wait_final(dmf, execution_id) == "Succeeded"
    url = call(dmf, "GetExportedPackageUrl", executionId=execution_id)
    with zipfile.ZipFile(io.BytesIO(download(dmf, url))) as archive:
        manifest = archive.read("Manifest.xml")
        assert manifest.startswith(b"\xff\xfe<\x00D\x00")
        assert b"<\x00?\x00x\x00m\x00l" not in manifest
        assert archive.read("PackageHeader.xml").startswith(b"\xff\xfe")
        customers = archive.read("Customers V3.xml").decode("utf-8")
        assert sorted(archive.namelist()) == [
            "Customer groups.xlsx",
            "Customers V3.xml",
            "Manifest.xml",
            "PackageHeader.xml",
        ]
        package_bytes = io.BytesIO()
        with zipfile.ZipFile(package_bytes, "w") as copy:
            for name in archive.namelist():
                copy.writestr(name, archive.read(name))
    blobs = clean_emulator.admin("GET", "dmf/blobs", params={"prefix": "exports/"})["blobs"]
    assert f"exports/{execution_id}/customers.zip" in [b["name"] for b in blobs]
    usmf = int(dmf.request("GET", "data/CustomersV3/$count").text.lstrip("\ufeff"))
    assert customers.count("<CUSTCUSTOMERV3ENTITY>") == usmf

    # the exported package imports as is: frrt has no customer groups nor customers yet
    imported = import_package(dmf, package_bytes.getvalue(), legalEntityId="frrt", definitionGroupId="Copy")
    assert wait_final(dmf, imported) == "Succeeded"
    count = dmf.request(
        "GET", "data/CustomersV3/$count", params={"cross-company": "true", "$filter": "dataAreaId eq 'frrt'"}
    )
    assert int(count.text.lstrip("\ufeff")) == usmf


def test_seeded_export_project_preview_and_unknown_project(dmf):
    execution_id = call(
        dmf,
        "ExportToPackagePreview",
        definitionGroupId="Customers-Export",
        packageName="p",
        executionId="preview-1",
        reExecute=False,
        legalEntityId="usmf",
        count=3,
    )
    assert execution_id == "preview-1"
    assert wait_final(dmf, execution_id) == "Succeeded"
    with zipfile.ZipFile(
        io.BytesIO(download(dmf, call(dmf, "GetExportedPackageUrl", executionId=execution_id)))
    ) as z:
        text = z.read("Customers V3.csv")
    assert text.startswith(b"\xff\xfe")
    assert text[2:].decode("utf-16-le").count("\r\n") == 4
    failed = call(
        dmf,
        "ExportToPackage",
        definitionGroupId="No-Such-Project",
        packageName="x",
        executionId="",
        reExecute=False,
        legalEntityId="usmf",
    )
    assert failed == "00000000-0000-0000-0000-000000000000"  # what RIS checks for (ref §3.2)
