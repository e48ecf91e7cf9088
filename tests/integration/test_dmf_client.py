"""DmfClient (shared/d365/dmf.py) against the emulator's DMF package API over HTTP (with its Azurite blobs),
plus the tolerant decoding of the answers the reference warns about (ref §3.2)."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator

import pytest

from shared.d365.connector import ConnectorClient
from shared.d365.dmf import (
    EMPTY_GUID,
    DmfActionError,
    DmfClient,
    ExecutionError,
    ExecutionStatus,
    MessageStatus,
    Poller,
    PollTimeoutError,
    WriteUrl,
    parse_execution_errors,
    parse_execution_id,
    parse_write_url,
)
from shared.d365.errors import D365ClientError, D365ConnectionError
from shared.d365.odata import ODataClient
from shared.d365.transport import D365Transport
from shared.packages.build import EntityFile, build_package
from shared.packages.validate import validate_package
from tests.support.d365 import faults, logged, make_transport
from tests.support.stack import EmulatorInfo

FAST = Poller(interval=0.05, max_attempts=400, sleep=None)
ACTIONS = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities."
FILE_IMPORT = "0a1b2c3d-d365-4e11-8f00-00000000d001"


@pytest.fixture
def dmf_emulator(clean_emulator: EmulatorInfo) -> EmulatorInfo:
    clean_emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.02})
    return clean_emulator


@pytest.fixture
def transport(dmf_emulator: EmulatorInfo) -> Iterator[D365Transport]:
    with make_transport(dmf_emulator) as t:
        yield t


@pytest.fixture
def odata(transport: D365Transport) -> ODataClient:
    return ODataClient(transport)


@pytest.fixture
def dmf(odata: ODataClient, transport: D365Transport) -> DmfClient:
    return DmfClient(odata, transport)


def group_package(*rows: tuple[str, str], pad_rows: int = 0) -> bytes:
    lines = ["CUSTOMERGROUPID,DESCRIPTION", *(f"{g},{d}" for g, d in rows)]
    lines += [f"P{n:05d},padding {n} {'x' * 30}" for n in range(pad_rows)]
    sink = io.BytesIO()
    source = io.BytesIO(("\n".join(lines) + "\n").encode())
    build_package(
        sink, [EntityFile("Customer groups", "groups.csv", source)], definition_group="Client test groups"
    )
    return sink.getvalue()


def new_id(prefix: str = "client-test") -> str:
    return f"{prefix}-{uuid.uuid4()}"


def import_package(dmf: DmfClient, package: bytes, **upload: int) -> str:
    target = dmf.get_azure_write_url(f"{uuid.uuid4()}.zip")
    dmf.upload_package(target, io.BytesIO(package), **upload)
    execution_id = new_id()
    answered = dmf.import_from_package(
        target.blob_url, "Client test groups", execution_id, legal_entity_id="usmf"
    )
    assert answered == execution_id
    return execution_id


def test_write_url_hides_its_signature(dmf: DmfClient) -> None:
    target = dmf.get_azure_write_url(f"{uuid.uuid4()}.zip")
    assert target.blob_url.startswith("http")
    assert "sig=" in target.blob_url
    signature = target.blob_url.split("sig=")[1].split("&")[0]
    assert signature not in repr(target)
    assert signature not in str(target)
    assert target.blob_id.strip("{}")


def test_import_a_built_package_end_to_end(dmf: DmfClient, odata: ODataClient) -> None:
    group = f"C{uuid.uuid4().hex[:6].upper()}"
    execution_id = import_package(dmf, group_package((group, "Imported by DmfClient")))
    assert dmf.wait_for_execution(execution_id, FAST) is ExecutionStatus.SUCCEEDED
    row = odata.get("CustomerGroups", {"dataAreaId": "usmf", "CustomerGroupId": group}, cross_company=True)
    assert row["Description"] == "Imported by DmfClient"
    assert dmf.execution_errors(execution_id) == []
    page = dmf.execution_summary_page_url(execution_id)
    assert page is not None
    assert execution_id.split("-")[0] in page


def test_a_package_uploaded_in_blocks_imports_too(dmf: DmfClient) -> None:
    package = group_package(pad_rows=3000)
    assert len(package) > 4 * 4096
    execution_id = import_package(dmf, package, block_size=4096, max_single_put=4096)
    assert dmf.wait_for_execution(execution_id, FAST) is ExecutionStatus.SUCCEEDED


def test_rows_in_error_bring_errors_and_an_error_keys_file(dmf: DmfClient, dmf_emulator) -> None:
    dmf_emulator.admin("PUT", "dmf/settings", json={"strict_error_json": False, "error_keys_polls": 2})
    too_long = "Y" * 40  # CustomerGroupId holds 10 characters
    execution_id = import_package(dmf, group_package(("OKGRP", "fine"), (too_long, 'bad "quoted" text')))
    status = dmf.wait_for_execution(execution_id, FAST)
    assert status in (ExecutionStatus.PARTIALLY_SUCCEEDED, ExecutionStatus.FAILED)
    assert not status.succeeded
    errors = dmf.execution_errors(execution_id)
    assert errors
    assert all(isinstance(e, ExecutionError) and e.message for e in errors)

    slept: list[float] = []
    url = dmf.wait_for_target_error_keys_file_url(
        execution_id, "Customer groups", Poller(interval=0.01, max_attempts=10, sleep=slept.append)
    )
    assert url is not None
    assert len(slept) == 2  # "" twice while generating, then the URL
    keys = io.BytesIO()
    assert dmf.download(url, keys) > 0
    gets = [r for r in logged(dmf_emulator, "/data/DataManagementDefinitionGroups") if r["method"] == "GET"]
    assert not gets  # the file came from blob storage, not through the D365 host


def test_polling_is_bounded_and_tolerates_an_early_not_found(dmf: DmfClient, dmf_emulator) -> None:
    dmf_emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 2})
    execution_id = import_package(dmf, group_package(("NF1", "not found at first")))
    assert dmf.wait_for_execution(execution_id, FAST, not_found_attempts=3) is ExecutionStatus.SUCCEEDED

    dmf_emulator.admin("PUT", "dmf/settings", json={"status_not_found_polls": 5, "step_delay_seconds": 0.02})
    other = import_package(dmf, group_package(("NF2", "too many")))
    with pytest.raises(D365ClientError) as caught:
        dmf.wait_for_execution(other, FAST, not_found_attempts=3)
    assert caught.value.status_code == 400

    slept: list[float] = []
    with pytest.raises(PollTimeoutError) as timed_out:
        Poller(interval=0.5, max_attempts=3, sleep=slept.append).until(lambda: None, lambda v: v is not None)
    assert slept == [0.5, 0.5]
    assert "3 attempts" in str(timed_out.value)


def test_export_to_package_and_download_it(dmf: DmfClient) -> None:
    execution_id = new_id("export")
    answered = dmf.export_to_package("Customers-Export", "customers", execution_id, legal_entity_id="usmf")
    assert answered == execution_id
    assert dmf.wait_for_execution(execution_id, FAST) is ExecutionStatus.SUCCEEDED
    url = dmf.wait_for_exported_package_url(execution_id, FAST)
    sink = io.BytesIO()
    assert dmf.download(url, sink) == len(sink.getvalue()) > 0
    sink.seek(0)
    names = {e.entity_name for e in validate_package(sink).manifest.entities}
    assert "Customer groups" in names


def test_export_of_an_unknown_project_is_an_error(dmf: DmfClient) -> None:
    with pytest.raises(DmfActionError, match="empty execution id"):
        dmf.export_to_package("No such project", "x", new_id())


def test_status_of_an_unknown_execution_is_unknown(dmf: DmfClient) -> None:
    reading = dmf.read_execution_status(new_id("nobody"))
    assert reading.status is ExecutionStatus.UNKNOWN
    assert reading.status.final


def test_import_is_not_resent_when_the_connection_drops(dmf: DmfClient, dmf_emulator) -> None:
    target = dmf.get_azure_write_url(f"{uuid.uuid4()}.zip")
    dmf.upload_package(target, group_package(("DROP", "dropped")))
    faults(
        dmf_emulator,
        {"family": "odata", "path_prefix": ACTIONS + "ImportFromPackage", "drop_rate": 1.0, "count": 1},
    )
    execution_id = new_id()
    with pytest.raises(D365ConnectionError, match="not_idempotent"):
        dmf.import_from_package(target.blob_url, "Client test groups", execution_id)
    # the client has given up, so no resend can follow; the emulator logs a dropped request a moment later
    imports = Poller(interval=0.05, max_attempts=100).until(
        lambda: logged(dmf_emulator, ACTIONS + "ImportFromPackage"), bool, what="the logged import"
    )
    assert len(imports) == 1
    # the way to recover: ask about the execution id we chose instead of importing again
    assert isinstance(dmf.execution_status(execution_id), ExecutionStatus)


def test_message_status_and_execution_of_a_recurring_message(dmf: DmfClient, transport, dmf_emulator) -> None:
    dmf_emulator.admin("PUT", "connector/settings", json={"pickup_delay_seconds": 0, "step_seconds": 0.05})
    body = b"\xff\xfe" + "CUSTOMERGROUPID,DESCRIPTION\r\nMSG1,via connector\r\n".encode("utf-16-le")
    message_id = ConnectorClient(transport).enqueue(FILE_IMPORT, body, entity="Customer groups")
    status = Poller(interval=0.05, max_attempts=400).until(
        lambda: dmf.message_status(message_id), lambda s: s.final, what="message processed"
    )
    assert status is MessageStatus.PROCESSED
    assert status.succeeded
    execution_id = dmf.execution_id_for_message(message_id)
    assert execution_id
    assert dmf.execution_status(execution_id) is ExecutionStatus.SUCCEEDED
    assert dmf.execution_id_for_message(str(uuid.uuid4())) is None  # empty GUID: not picked up


# -- decoding of the answers (no emulator needed)


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Succeeded", ExecutionStatus.SUCCEEDED),
        ("partially succeeded", ExecutionStatus.PARTIALLY_SUCCEEDED),
        (" NotRun ", ExecutionStatus.NOT_RUN),
        ("not_run", ExecutionStatus.NOT_RUN),
        ("Cancelled", ExecutionStatus.CANCELED),
        ("Bad request", ExecutionStatus.UNKNOWN),
        ("", ExecutionStatus.UNKNOWN),
    ],
)
def test_execution_status_parsing(text: str, status: ExecutionStatus) -> None:
    assert ExecutionStatus.parse(text) is status


def test_execution_status_final_and_succeeded() -> None:
    assert not ExecutionStatus.EXECUTING.final
    assert not ExecutionStatus.NOT_RUN.final
    assert ExecutionStatus.PARTIALLY_SUCCEEDED.final
    assert not ExecutionStatus.PARTIALLY_SUCCEEDED.succeeded


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Preprocessing", MessageStatus.PREPROCESSING),
        ("PreProcessing", MessageStatus.PREPROCESSING),
        ("PostProcessingFailed", MessageStatus.POSTPROCESSING_FAILED),
        ("PostProcessingError", MessageStatus.POSTPROCESSING_FAILED),
        ("preprocessingerror", MessageStatus.PREPROCESSING_ERROR),
        ("ProcessedWithErrors", MessageStatus.PROCESSED_WITH_ERRORS),
        ("Downloaded", MessageStatus.DOWNLOADED),
        ("Acked", MessageStatus.ACKED),
        ("Failed", MessageStatus.UNKNOWN),
    ],
)
def test_message_status_both_spellings(text: str, status: MessageStatus) -> None:
    assert MessageStatus.parse(text) is status


def test_message_status_final_states() -> None:
    final = {s for s in MessageStatus if s.final}
    assert final == {
        MessageStatus.PROCESSED,
        MessageStatus.PROCESSED_WITH_ERRORS,
        MessageStatus.PREPROCESSING_ERROR,
        MessageStatus.POSTPROCESSING_FAILED,
        MessageStatus.ACKED,
    }
    assert MessageStatus.PROCESSED_WITH_ERRORS.failed
    assert not MessageStatus.PROCESSING.final


def test_execution_errors_strict_nested_or_as_list() -> None:
    row = {"RecordId": "5637144576", "Field": "NAME", "ErrorMessage": "Name is mandatory"}
    expected = [ExecutionError("5637144576", "NAME", "Name is mandatory")]
    import json

    assert parse_execution_errors(json.dumps([row])) == expected
    assert parse_execution_errors([row]) == expected
    assert parse_execution_errors({"value": json.dumps([row])}) == expected
    assert parse_execution_errors(json.dumps(row)) == expected
    assert parse_execution_errors("") == []
    assert parse_execution_errors("[]") == []
    assert parse_execution_errors(None) == []


def test_execution_errors_with_unescaped_quotes_and_line_breaks_are_recovered() -> None:
    raw = (
        '[{"RecordId":"1","Field":"DESCRIPTION","ErrorMessage":"Value "A, B" is not valid\r\nfor field "X""},'
        '{"RecordId":"2","Field":"","ErrorMessage":"Results. Record ("2") failed"}]'
    )
    assert parse_execution_errors(raw) == [
        ExecutionError("1", "DESCRIPTION", 'Value "A, B" is not valid\r\nfor field "X"'),
        ExecutionError("2", "", 'Results. Record ("2") failed'),
    ]


def test_unparseable_execution_errors_become_one_raw_error() -> None:
    assert parse_execution_errors("Something went wrong {") == [
        ExecutionError("", "", "Something went wrong {")
    ]


def test_write_url_shapes() -> None:
    text = (
        '{"BlobId":"{B1}","BlobUrl":"https://acct.blob.core.windows.net/dmf/x.zip?sv=2014-02-14&sig=SECRET"}'
    )
    assert parse_write_url(text) == WriteUrl(
        "{B1}", "https://acct.blob.core.windows.net/dmf/x.zip?sv=2014-02-14&sig=SECRET"
    )
    assert parse_write_url({"blobUrl": "https://a/b", "blobId": "x"}).blob_url == "https://a/b"
    with pytest.raises(DmfActionError) as caught:
        parse_write_url('{"BlobId":"x","BlobUrl":"ftp://acct/dmf/x.zip?sv=1&sig=SECRET"}')
    assert "SECRET" not in str(caught.value)


def test_execution_id_shapes() -> None:
    assert parse_execution_id("ExportToPackage", "E-1", "E-1") == "E-1"
    assert parse_execution_id("ExportToPackage", {"value": "E-1"}, "E-1") == "E-1"
    for empty in (EMPTY_GUID, "{" + EMPTY_GUID + "}", "", None, {"value": ""}):
        with pytest.raises(DmfActionError):
            parse_execution_id("ExportToPackage", empty, "E-1")
