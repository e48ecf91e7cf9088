"""Bad input never reaches D365: each case ends in the errors container with a status record saying why."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared.context import AppContext
from shared.pipelines.imports import ImportSettings
from shared.settings import Settings
from tests.integration.test_imports_stack import (
    CUSTOMER_GROUPS_JOB,
    PACKAGE_ROUTE,
    ImportStack,
    customer_groups_csv,
    stack_env,
)
from tests.support.stack import AzuriteInfo, EmulatorInfo

NS = (
    'xmlns:i="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns="http://schemas.microsoft.com/dynamics/2015/01/DataManagement"'
)
HEADER = f"<DataManagementPackageHeader {NS}><PackageVersion>2</PackageVersion></DataManagementPackageHeader>"
PACKAGES_ONLY = {**PACKAGE_ROUTE, "name": "pkg", "accept": "package", "entities": []}
FILE_JOB = {
    "name": "filejob",
    "target": "recurring",
    "activity_id": CUSTOMER_GROUPS_JOB,
    "entity": "Customer groups",
    "legal_entity": "usmf",
    "entities": [{"entity": "Customer groups", "source_format": "CSV-Unicode"}],
}
BY_TOKEN = {
    **PACKAGE_ROUTE,
    "name": "bytoken",
    "legal_entity_from": "file_name",
    "file_name_token": 1,
    "legal_entity": "",
}
SMALL = {**PACKAGE_ROUTE, "name": "small", "max_file_mb": 1}
PATTERNS = {
    **PACKAGE_ROUTE,
    "name": "patterns",
    "entities": [{"entity": "Customer groups", "file_pattern": "groups*.csv"}],
}


def zipped(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return buffer.getvalue()


def manifest(entity_file: str = "Customer groups.csv", source_format: str = "CSV-Unicode") -> bytes:
    text = (
        f"<DataManagementPackageManifest {NS}><DefinitionGroupName>X</DefinitionGroupName><PackageEntityList>"
        "<DataManagementPackageEntityData><EntityName>Customer groups</EntityName>"
        f"<InputFilePath>{entity_file}</InputFilePath><SourceFormat>{source_format}</SourceFormat>"
        "</DataManagementPackageEntityData></PackageEntityList></DataManagementPackageManifest>"
    )
    return b"\xff\xfe" + text.encode("utf-16-le")


def unicode_csv(text: str) -> bytes:
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


GOOD_DATA = unicode_csv("CUSTOMERGROUPID,DESCRIPTION\nZZ,Never\n")

CASES: dict[str, tuple[dict[str, Any], str, bytes, str]] = {
    "unsafe zip path": (
        PACKAGES_ONLY,
        "pkg/evil.zip",
        zipped(
            {"../../evil.csv": GOOD_DATA, "Manifest.xml": manifest(), "PackageHeader.xml": HEADER.encode()}
        ),
        "unsafe_path",
    ),
    "zip bomb": (
        PACKAGES_ONLY,
        "pkg/bomb.zip",
        zipped(
            {
                "Customer groups.csv": b"\0" * (6 * 1024 * 1024),
                "Manifest.xml": manifest(),
                "PackageHeader.xml": HEADER.encode(),
            }
        ),
        "zip_bomb",
    ),
    "missing manifest": (
        PACKAGES_ONLY,
        "pkg/nomanifest.zip",
        zipped({"Customer groups.csv": GOOD_DATA, "PackageHeader.xml": HEADER.encode()}),
        "manifest_missing",
    ),
    "a bundle where packages are expected": (
        PACKAGES_ONLY,
        "pkg/bundle.zip",
        zipped({"groups.csv": customer_groups_csv("A")}),
        "manifest_missing",
    ),
    "invalid manifest": (
        PACKAGES_ONLY,
        "pkg/badmanifest.zip",
        zipped(
            {
                "Customer groups.csv": GOOD_DATA,
                "Manifest.xml": b"<not xml",
                "PackageHeader.xml": HEADER.encode(),
            }
        ),
        "manifest_invalid",
    ),
    "manifest with a DTD": (
        PACKAGES_ONLY,
        "pkg/dtd.zip",
        zipped(
            {
                "Customer groups.csv": GOOD_DATA,
                "PackageHeader.xml": HEADER.encode(),
                "Manifest.xml": b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
            }
        ),
        "manifest_unsafe",
    ),
    "XML data with entities in a package": (
        PACKAGES_ONLY,
        "pkg/xxe.zip",
        zipped(
            {
                "groups.xml": b'<!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]><d>&x;</d>',
                "Manifest.xml": manifest("groups.xml", "XML-Element"),
                "PackageHeader.xml": HEADER.encode(),
            }
        ),
        "manifest_unsafe",
    ),
    "not a zip": (PACKAGES_ONLY, "pkg/garbage.zip", b"this is not a zip file at all", "not_a_zip"),
    "empty file": (PACKAGE_ROUTE, "groups/empty.csv", b"", "empty_file"),
    "header row only": (PACKAGE_ROUTE, "groups/header.csv", b"CustomerGroupId,Description\n", "empty_file"),
    "invalid UTF-8 in a CSV": (
        PACKAGE_ROUTE,
        "groups/latin1.csv",
        "Id,Name\nA,Caf\u00e9\n".encode("latin-1"),
        "wrong_encoding",
    ),
    "CSV-Unicode data that is UTF-8 in a package": (
        PACKAGES_ONLY,
        "pkg/utf8.zip",
        zipped(
            {
                "Customer groups.csv": b"CUSTOMERGROUPID\nA\n",
                "Manifest.xml": manifest(),
                "PackageHeader.xml": HEADER.encode(),
            }
        ),
        "wrong_encoding",
    ),
    "UTF-8 file for a CSV-Unicode File job": (
        FILE_JOB,
        "filejob/groups.csv",
        customer_groups_csv("A"),
        "wrong_encoding",
    ),
    "too large for the route": (
        SMALL,
        "small/big.csv",
        b"Id,Name\n" + b"A,B\n" * 300_000,
        "file_too_large",
    ),
    "unsupported file type": (PACKAGE_ROUTE, "groups/report.pdf", b"%PDF-1.4", "unsupported_file_type"),
    "no legal entity token": (
        BY_TOKEN,
        "bytoken/groups.csv",
        customer_groups_csv("A"),
        "legal_entity_missing",
    ),
    "invalid legal entity token": (
        BY_TOKEN,
        "bytoken/x_us-mf.csv",
        customer_groups_csv("A"),
        "legal_entity_invalid",
    ),
    "no entity for the file name": (
        PATTERNS,
        "patterns/customers.csv",
        customer_groups_csv("A"),
        "mapping_invalid",
    ),
}


@pytest.fixture(scope="module")
def stack(emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[ImportStack]:
    """One stack for every case (rejections never reach D365, so the emulator needs no reset)."""
    routes = [PACKAGE_ROUTE, PACKAGES_ONLY, FILE_JOB, BY_TOKEN, SMALL, PATTERNS]
    env = stack_env(emulator, azurite, IMPORT_ROUTES=json.dumps(routes), PACKAGE_MAX_RATIO="100")
    context = AppContext.from_settings(Settings.from_env(env))
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield ImportStack(context, context.settings.section(ImportSettings), emulator, azurite, service)
    context.close()
    service.close()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_before_anything_is_sent(stack: ImportStack, case: str) -> None:
    _, name, data, reason = CASES[case]
    executions, messages = len(stack.executions()), len(stack.messages(CUSTOMER_GROUPS_JOB))
    stack.drop(name, data)
    report = stack.run(name)
    assert (report.outcome, report.reason_code) == ("rejected", reason), report
    assert report.stored_as is not None
    container, _, stored = report.stored_as.partition("/")
    assert container == stack.settings.errors_container
    assert stack.read(container, stored) == data  # the input itself, unchanged, next to its record
    record = stack.record(report.stored_as)
    assert record["outcome"] == "rejected"
    assert record["details"]["reason_code"] == reason
    assert record["message"]
    assert stack.names(stack.settings.inbound_container) == []
    assert len(stack.executions()) == executions
    assert len(stack.messages(CUSTOMER_GROUPS_JOB)) == messages
    assert stack.ledger() == []
