"""The OData emulator's sans-IO handler and store without HTTP: keyset paging edge cases, multipart parsing,
concurrency and persistence (the HTTP behaviour is covered in tests/integration/test_emulator_odata*.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from emulator.odata.actions import Action, ActionParameter
from emulator.odata.batch import ChangeSet, Operation, parse_batch
from emulator.odata.catalog import EntityInfo
from emulator.odata.messages import ODataRequest, ODataResponse
from emulator.odata.schema import EDM_STRING, EntityType, Property
from emulator.odata.service import ODataService
from emulator.odata.store import ODataStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ODataStore]:
    store = ODataStore(tmp_path / "odata.sqlite")
    yield store
    store.close()


def call(
    service: ODataService,
    method: str,
    path: str,
    query: str = "",
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> ODataResponse:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = ODataRequest(
        method,
        path,
        parse_qsl(query, keep_blank_values=True),
        {k.lower(): v for k, v in (headers or {}).items()},
        raw,
        "http://emulator.test:1234",
        "usmf",
        query,
    )
    return service.handle(request)


def follow(service: ODataService, path: str, query: str, size: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    headers = {"Prefer": f"odata.maxpagesize={size}"}
    response = call(service, "GET", path, query, headers=headers)
    while True:
        assert response.status == 200, response.body
        page = json.loads(response.body)
        rows += page["value"]
        link = page.get("@odata.nextLink")
        if not link:
            return rows
        parts = urlsplit(link)
        assert parts.netloc == "emulator.test:1234"
        response = call(service, "GET", parts.path.removeprefix("/data/"), parts.query, headers=headers)


@pytest.mark.parametrize(
    "orderby",
    [
        "",
        "CreditLimit desc",
        "OnHoldStatus desc,OrganizationName",
        "AddressCity,CreditLimit desc",
        "NameAlias desc",
    ],
)
def test_keyset_paging_matches_one_big_page_even_with_nulls(store: ODataStore, orderby: str) -> None:
    conn = store.connection()
    # NULLs never come through the API (F&O fields hold none), but the pager must not lose them either
    conn.execute('UPDATE "CustomersV3" SET "AddressCity" = NULL, "NameAlias" = NULL WHERE "_RecId" % 3 = 0')
    service = ODataService(store)
    query = "cross-company=true" + (f"&$orderby={orderby}" if orderby else "")
    expected = json.loads(call(service, "GET", "CustomersV3", query).body)["value"]
    for size in (1, 4, 7):
        assert follow(service, "CustomersV3", query, size) == expected


def test_seed_generates_rows_in_the_default_company_and_reset_restores(store: ODataStore) -> None:
    assert store.seed("CustomersV3", 1000) == 1044
    assert store.seed("SalesOrderHeadersV2", 50) == 75
    assert store.seed("SalesOrderLines", 100) == 158
    service = ODataService(store)
    count = call(service, "GET", "CustomersV3/$count")
    assert count.body == b"\xef\xbb\xbf1020"
    lines = json.loads(call(service, "GET", "SalesOrderLines", "$filter=InventoryLotId eq 'L*'&$top=1").body)
    assert lines["value"][0]["SalesOrderNumber"]
    with pytest.raises(ValueError, match="cannot generate"):
        store.seed("LegalEntities", 1)
    with pytest.raises(ValueError, match="unknown"):
        store.seed("Nope", 1)
    store.reset()
    assert store.count("CustomersV3") == 44
    assert store.count("SalesOrderLines") == 58


def test_data_survives_reopening_and_no_seed_means_empty(tmp_path: Path) -> None:
    first = ODataStore(tmp_path / "odata.sqlite")
    service = ODataService(first)
    created = call(service, "POST", "CustomerGroups", body={"CustomerGroupId": "55", "Description": "kept"})
    assert created.status == 201
    first.close()
    again = ODataStore(tmp_path / "odata.sqlite")
    assert again.count("CustomerGroups") == 25
    again.close()
    empty = ODataStore(tmp_path / "empty.sqlite", seed=False)
    assert empty.count("CustomersV3") == 0
    empty.reset()
    assert empty.count("CustomersV3") == 0
    empty.close()


def test_concurrent_writers_and_readers(store: ODataStore) -> None:
    service = ODataService(store)
    failures: list[str] = []

    def work(worker: int) -> None:
        for n in range(15):
            account = f"W{worker}-{n:02d}"
            body = {"CustomerAccount": account, "CustomerGroupId": "10"}
            response = call(service, "POST", "CustomersV3", body=body)
            if response.status != 201:
                failures.append(response.body.decode())
            read = call(service, "GET", f"CustomersV3(dataAreaId='usmf',CustomerAccount='{account}')")
            if read.status != 200:
                failures.append(read.body.decode())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert store.count("CustomersV3") == 44 + 6 * 15


def test_multipart_parsing_tolerates_lf_preamble_and_epilogue() -> None:
    body = (
        b"this is a preamble\n"
        b"--b1\n"
        b"Content-Type: application/http\n\n"
        b"GET CustomersV3?$top=1 HTTP/1.1\n"
        b"Accept: application/json\n\n\n"
        b"--b1\n"
        b"Content-Type: multipart/mixed; boundary=c1\n\n"
        b"--c1\n"
        b"Content-Type: application/http\n"
        b"Content-ID: 7\n\n"
        b"POST CustomerGroups HTTP/1.1\n"
        b"Content-Type: application/json\n\n"
        b'{"CustomerGroupId": "61",\n "Description": "two\\nlines"}\n'
        b"--c1--\n"
        b"--b1--\n"
        b"epilogue"
    )
    first, changeset = parse_batch("multipart/mixed; boundary=b1", body)
    assert isinstance(first, Operation)
    assert isinstance(changeset, ChangeSet)
    assert (first.method, first.url, first.body) == ("GET", "CustomersV3?$top=1", b"")
    operation = changeset.operations[0]
    assert operation.content_id == "7"
    assert json.loads(operation.body) == {"CustomerGroupId": "61", "Description": "two\nlines"}


def test_emulator_bugs_still_answer_in_the_d365_envelope(
    store: ODataStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = ODataService(store)

    def broken(*args: Any, **kwargs: Any) -> ODataResponse:
        raise RuntimeError("boom")

    monkeypatch.setattr(service.reader, "collection", broken)
    response = call(service, "GET", "CustomersV3")
    assert response.status == 500
    assert json.loads(response.body)["error"]["innererror"]["message"] == "RuntimeError: boom"


def test_another_module_can_add_an_entity_set_and_bound_actions(tmp_path: Path) -> None:
    """How the DMF package API plugs in: its own set, its own collection-bound actions."""
    store = ODataStore(tmp_path / "odata.sqlite")
    entity = EntityType(
        name="DataManagementDefinitionGroup",
        set_name="DataManagementDefinitionGroups",
        keys=("DefinitionGroupId",),
        company_specific=False,
        properties=(
            Property("DefinitionGroupId", EDM_STRING, nullable=False),
            Property("Description", EDM_STRING),
        ),
    )
    info = EntityInfo(entity, "Data management definition groups", "DMFDefinitionGroupEntity")
    store.register_entity(info, demo=[{"DefinitionGroupId": "Customers import", "Description": "demo"}])
    store.actions.register(
        Action(
            "GetAzureWriteUrl",
            lambda call: json.dumps({"BlobId": call.parameters["uniqueFileName"]}),
            parameters=(ActionParameter("uniqueFileName", EDM_STRING, nullable=False),),
            return_type=EDM_STRING,
            bound_set="DataManagementDefinitionGroups",
        )
    )
    service = ODataService(store)
    rows = json.loads(call(service, "GET", "DataManagementDefinitionGroups").body)["value"]
    assert [row["DefinitionGroupId"] for row in rows] == ["Customers import"]
    answer = call(
        service,
        "POST",
        "DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetAzureWriteUrl",
        body={"uniqueFileName": "abc"},
    )
    assert json.loads(json.loads(answer.body)["value"]) == {"BlobId": "abc"}  # double-encoded, as D365 does
    metadata = call(service, "GET", "$metadata").body
    assert b'EntitySet Name="DataManagementDefinitionGroups"' in metadata
    assert b'Action Name="GetAzureWriteUrl" IsBound="true"' in metadata
    assert call(service, "DELETE", "DataManagementDefinitionGroups('Customers import')").status == 204
    store.reset()
    assert store.count("DataManagementDefinitionGroups") == 1
    store.close()
    reopened = ODataStore(tmp_path / "odata.sqlite")
    reopened.register_entity(info)
    assert reopened.count("DataManagementDefinitionGroups") == 1  # kept: same columns
    reopened.close()
