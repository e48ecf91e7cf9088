"""The emulator's OData service over real HTTP (ref §1): envelopes, ETags, query options, company scoping,
paging, CRUD with If-Match, validation errors, $metadata, actions and bulk seeding."""

from __future__ import annotations

import base64
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests

from localstack.processes import EmulatorInfo
from tests.support.d365_http import D365Http, d365_http

NS = "Microsoft.Dynamics.DataEntities"
CUSTOMER = "CustomersV3(dataAreaId='usmf',CustomerAccount='US-001')"
ETAG = re.compile(r'^W/"([A-Za-z0-9+/=]+)"$')
ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


@pytest.fixture
def api(clean_emulator: EmulatorInfo) -> Iterator[D365Http]:
    """A fresh token per test, taken after the reset: other modules may rotate keys or inject faults."""
    client = d365_http(clean_emulator)
    yield client
    client.session.close()


def inner(response: requests.Response) -> str:
    """The useful text of a D365 error envelope (ref §1.7), after checking the envelope's shape."""
    error = response.json()["error"]
    assert error["code"] == ""
    assert error["message"] == "An error has occurred."
    assert set(error["innererror"]) == {"message", "type", "stacktrace"}
    return str(error["innererror"]["message"])


def etag_parts(etag: str) -> tuple[int, int]:
    match = ETAG.match(etag)
    assert match, etag
    decoded = base64.b64decode(match.group(1)).decode()
    version, rec_id = decoded.strip("'").split(",")
    return int(version), int(rec_id)


def new_customer(account: str, **extra: Any) -> dict[str, Any]:
    return {
        "CustomerAccount": account,
        "OrganizationName": f"Test {account}",
        "CustomerGroupId": "10",
        **extra,
    }


# --- service document, $metadata, envelopes ----------------------------------------------------------------


def test_service_document_lists_the_sets(api: D365Http) -> None:
    response = api.get("")
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"] == f"{api.root}/$metadata"
    names = {item["name"] for item in body["value"]}
    assert {
        "CustomersV3",
        "VendorsV2",
        "CustomerGroups",
        "ReleasedProductsV2",
        "SalesOrderHeadersV2",
        "SalesOrderLines",
        "LegalEntities",
    } <= names


def test_metadata_is_csdl_with_keys_enums_navigations_and_actions(api: D365Http) -> None:
    response = api.get("$metadata")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/xml")
    edm = "{http://docs.oasis-open.org/odata/ns/edm}"
    root = ET.fromstring(response.content)
    schema = root.find(f".//{edm}Schema")
    assert schema is not None
    assert schema.get("Namespace") == NS
    customer = schema.find(f"{edm}EntityType[@Name='CustomerV3']")
    assert customer is not None
    assert [r.get("Name") for r in customer.iterfind(f"{edm}Key/{edm}PropertyRef")] == [
        "dataAreaId",
        "CustomerAccount",
    ]
    props = {p.get("Name"): p for p in customer.iterfind(f"{edm}Property")}
    assert props["CreditLimit"].get("Type") == "Edm.Decimal"
    assert props["OnHoldStatus"].get("Type") == f"{NS}.CustVendorBlocked"
    assert props["CustomerAccount"].get("Nullable") == "false"
    no_yes = schema.find(f"{edm}EnumType[@Name='NoYes']")
    assert no_yes is not None
    assert [m.get("Name") for m in no_yes] == ["No", "Yes"]
    header = schema.find(f"{edm}EntityType[@Name='SalesOrderHeaderV2']")
    assert header is not None
    navs = {n.get("Name"): n.get("Type") for n in header.iterfind(f"{edm}NavigationProperty")}
    assert navs == {"SalesOrderLines": f"Collection({NS}.SalesOrderLine)", "Customer": f"{NS}.CustomerV3"}
    container = schema.find(f"{edm}EntityContainer")
    assert container is not None
    headers_set = container.find(f"{edm}EntitySet[@Name='SalesOrderHeadersV2']")
    assert headers_set is not None
    binding = headers_set.find(f"{edm}NavigationPropertyBinding[@Path='SalesOrderLines']")
    assert binding is not None
    assert binding.get("Target") == "SalesOrderLines"
    confirm = schema.find(f"{edm}Action[@Name='Confirm']")
    assert confirm is not None
    assert confirm.get("IsBound") == "true"
    assert confirm[0].get("Type") == f"{NS}.SalesOrderHeaderV2"
    count = schema.find(f"{edm}Action[@Name='GetCustomerCount']")
    assert count is not None
    assert count[0].get("Type") == f"Collection({NS}.CustomerV3)"
    convert = schema.find(f"{edm}Action[@Name='ConvertCurrency']")
    assert convert is not None
    assert convert.get("IsBound") is None
    assert [(p.get("Name"), p.get("Type")) for p in convert.iterfind(f"{edm}Parameter")] == [
        ("Amount", "Edm.Decimal"),
        ("FromCurrency", "Edm.String"),
        ("ToCurrency", "Edm.String"),
    ]
    assert container.find(f"{edm}ActionImport[@Name='ConvertCurrency']") is not None


def test_collection_envelope_etags_and_wire_types(api: D365Http) -> None:
    response = api.get("CustomersV3")
    assert response.status_code == 200
    assert response.headers["OData-Version"] == "4.0"
    body = response.json()
    assert body["@odata.context"] == f"{api.root}/$metadata#CustomersV3"
    rows = body["value"]
    assert len(rows) == 20
    assert {row["dataAreaId"] for row in rows} == {"usmf"}  # the caller's default company only (ref §1.2)
    first = rows[0]
    assert next(iter(first)) == "@odata.etag"
    version, rec_id = etag_parts(first["@odata.etag"])
    assert version == 1
    assert rec_id >= 5637144576
    assert isinstance(first["CreditLimit"], int | float)
    assert first["OnHoldStatus"] in ("No", "Invoice", "All")
    assert ISO_UTC.match(first["CreatedDateTime"])
    entities = api.get("LegalEntities").json()["value"]
    assert all(isinstance(row["IsVirtual"], bool) for row in entities)  # real Edm.Boolean → JSON boolean
    assert {row["LegalEntityId"] for row in entities} >= {"USMF", "USRT", "DEMF", "GBSI"}


def test_single_entity_property_and_raw_value(api: D365Http) -> None:
    response = api.get(CUSTOMER)
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"] == f"{api.root}/$metadata#CustomersV3/$entity"
    assert body["@odata.etag"] == response.headers["ETag"]
    assert body["CustomerAccount"] == "US-001"
    # case-insensitive keys, like F&O on SQL Server
    assert (
        api.get("CustomersV3(dataAreaId='USMF',CustomerAccount='us-001')").json()["CustomerAccount"]
        == "US-001"
    )
    name = api.get(f"{CUSTOMER}/OrganizationName").json()
    assert name["value"] == body["OrganizationName"]
    assert name["@odata.context"].endswith(
        "#CustomersV3(dataAreaId='usmf',CustomerAccount='US-001')/OrganizationName"
    )
    raw = api.get(f"{CUSTOMER}/OrganizationName/$value")
    assert raw.text == body["OrganizationName"]
    assert api.get("LegalEntities('USMF')").json()["Name"] == "Contoso Entertainment System USA"
    selected = api.get(CUSTOMER, params={"$select": "CustomerAccount,CreditLimit"}).json()
    assert set(selected) == {"@odata.context", "@odata.etag", "CustomerAccount", "CreditLimit"}


def test_missing_entity_and_unknown_paths_are_404_envelopes(api: D365Http) -> None:
    missing = api.get("CustomersV3(dataAreaId='usmf',CustomerAccount='NOPE')")
    assert missing.status_code == 404
    assert "CustomersV3" in inner(missing)
    unknown = api.get("NoSuchEntities")
    assert unknown.status_code == 404
    assert "No HTTP resource was found" in inner(unknown)
    assert api.get(f"{CUSTOMER}/NoSuchProperty").status_code == 404
    partial_key = api.get("CustomersV3(CustomerAccount='US-001')")
    assert partial_key.status_code == 400
    assert "key" in inner(partial_key).lower()


# --- company scoping --------------------------------------------------------------------------------------


def test_default_company_versus_cross_company(api: D365Http, clean_emulator: EmulatorInfo) -> None:
    every = api.get("CustomersV3", params={"cross-company": "true"}).json()["value"]
    assert {row["dataAreaId"] for row in every} == {"usmf", "usrt", "demf", "gbsi"}
    usrt = api.get("CustomersV3", params={"cross-company": "true", "$filter": "dataAreaId eq 'USRT'"}).json()
    assert {row["dataAreaId"] for row in usrt["value"]} == {"usrt"}
    # without cross-company=true a filter on another company finds nothing (ref §1.2, [S3])
    assert api.get("CustomersV3", params={"$filter": "dataAreaId eq 'usrt'"}).json()["value"] == []
    # a complete key with an explicit dataAreaId reads that company's row (the key is complete)
    other = api.get("CustomersV3(dataAreaId='usrt',CustomerAccount='US-001')")
    assert other.status_code == 200
    assert other.json()["dataAreaId"] == "usrt"
    # LegalEntities is not company-specific
    assert len(api.get("LegalEntities").json()["value"]) == 5
    # a caller whose F&O user defaults to DEMF sees DEMF
    app = clean_emulator.admin(
        "POST", "apps", json={"default_company": "DEMF", "client_secret": "s3cret-demf!"}
    )
    demf = d365_http(clean_emulator, client_id=app["client_id"], client_secret="s3cret-demf!")
    rows = demf.get("CustomersV3").json()["value"]
    assert rows
    assert {row["dataAreaId"] for row in rows} == {"demf"}
    created = demf.post("CustomerGroups", json={"CustomerGroupId": "77", "Description": "DEMF group"})
    assert created.status_code == 201
    assert created.json()["dataAreaId"] == "demf"


# --- query options ----------------------------------------------------------------------------------------


def accounts(api: D365Http, **params: str) -> list[str]:
    response = api.get("CustomersV3", params=params)
    assert response.status_code == 200, response.text
    return [row["CustomerAccount"] for row in response.json()["value"]]


def test_filters_wildcard_enum_numbers_dates_and_navigation(api: D365Http) -> None:
    retail = api.get("CustomersV3", params={"$filter": "OrganizationName eq '*retail*'"}).json()["value"]
    assert retail
    assert all("retail" in row["OrganizationName"].lower() for row in retail)
    on_hold = accounts(api, **{"$filter": f"OnHoldStatus eq {NS}.CustVendorBlocked'All'"})
    assert on_hold == ["US-006", "US-013", "US-020"]
    not_hold = accounts(api, **{"$filter": f"OnHoldStatus ne {NS}.CustVendorBlocked'No'"})
    assert set(on_hold) < set(not_hold)
    enum_gt = api.get("CustomersV3", params={"$filter": f"OnHoldStatus gt {NS}.CustVendorBlocked'No'"})
    assert enum_gt.status_code == 400  # only eq/ne on enums (ref §1.3)
    assert "eq" in inner(enum_gt)
    rich = api.get(
        "CustomersV3", params={"$filter": "CreditLimit ge 150000 and CustomerGroupId ne '10'"}
    ).json()
    assert all(row["CreditLimit"] >= 150000 and row["CustomerGroupId"] != "10" for row in rich["value"])
    recent = api.get("CustomersV3", params={"$filter": "CreatedDateTime gt 2025-02-01T00:00:00Z"}).json()[
        "value"
    ]
    assert recent
    assert all(row["CreatedDateTime"] > "2025-02-01T00:00:00Z" for row in recent)
    lines = api.get(
        "SalesOrderLines",
        params={"$filter": f"SalesOrderHeader/SalesOrderStatus eq {NS}.SalesStatus'Invoiced'"},
    ).json()["value"]
    invoiced = {
        row["SalesOrderNumber"]
        for row in api.get(
            "SalesOrderHeadersV2", params={"$filter": f"SalesOrderStatus eq {NS}.SalesStatus'Invoiced'"}
        ).json()["value"]
    }
    assert lines
    assert {row["SalesOrderNumber"] for row in lines} == invoiced
    for bad in (
        "CustomerGroupId in ('10','20')",
        "NoSuchField eq 1",
        "CreditLimit eq 'abc'",
        "OnHoldStatus has x",
    ):
        response = api.get("CustomersV3", params={"$filter": bad})
        assert response.status_code == 400, bad
        assert inner(response)


def test_select_orderby_top_skip(api: D365Http) -> None:
    body = api.get("CustomersV3", params={"$select": "CustomerAccount,OrganizationName"}).json()
    assert body["@odata.context"] == f"{api.root}/$metadata#CustomersV3(CustomerAccount,OrganizationName)"
    assert set(body["value"][0]) == {"@odata.etag", "CustomerAccount", "OrganizationName"}
    ordered = api.get("CustomersV3", params={"$orderby": "CreditLimit desc,CustomerAccount"}).json()["value"]
    keys = [(-row["CreditLimit"], row["CustomerAccount"]) for row in ordered]
    assert keys == sorted(keys)
    everything = accounts(api, **{"$orderby": "OrganizationName desc"})
    assert (
        accounts(api, **{"$orderby": "OrganizationName desc", "$top": "5", "$skip": "3"}) == everything[3:8]
    )
    assert accounts(api, **{"$top": "0"}) == []
    assert api.get("CustomersV3", params={"$top": "-1"}).status_code == 400
    assert api.get("CustomersV3", params={"$orderby": "NoSuchField"}).status_code == 400


def test_count_inline_and_path_with_bom(api: D365Http) -> None:
    body = api.get("CustomersV3", params={"$count": "true", "$top": "2"}).json()
    assert body["@odata.count"] == 20
    assert len(body["value"]) == 2
    path = api.get("CustomersV3/$count", params={"cross-company": "true", "$filter": "dataAreaId eq 'demf'"})
    assert path.status_code == 200
    assert path.headers["Content-Type"].startswith("text/plain")
    assert path.content == b"\xef\xbb\xbf8"  # ref §1.3: the bare number, with a UTF-8 BOM
    assert api.get("CustomersV3/$count").content == b"\xef\xbb\xbf20"


def test_expand_first_level_only(api: D365Http) -> None:
    body = api.get(
        "SalesOrderHeadersV2",
        params={
            "$expand": "SalesOrderLines($select=InventoryLotId,LineAmount),"
            "Customer($select=OrganizationName)",
            "$filter": "SalesOrderNumber eq '000006' or SalesOrderNumber eq '000007'",
        },
    ).json()["value"]
    by_number = {row["SalesOrderNumber"]: row for row in body}
    assert len(by_number["000006"]["SalesOrderLines"]) == 3
    assert set(by_number["000006"]["SalesOrderLines"][0]) == {"@odata.etag", "InventoryLotId", "LineAmount"}
    assert by_number["000007"]["SalesOrderLines"] == []  # a collection navigation is always an array
    assert (
        by_number["000006"]["Customer"]["OrganizationName"]
        == api.get("CustomersV3(dataAreaId='usmf',CustomerAccount='US-003')").json()["OrganizationName"]
    )
    order = "SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000006')"
    single = api.get(order, params={"$expand": "SalesOrderLines"}).json()
    assert len(single["SalesOrderLines"]) == 3
    via_path = api.get(f"{order}/SalesOrderLines").json()
    assert via_path["@odata.context"] == f"{api.root}/$metadata#SalesOrderLines"
    assert len(via_path["value"]) == 3
    assert api.get(f"{order}/SalesOrderLines/$count").content == b"\xef\xbb\xbf3"
    assert api.get(f"{order}/Customer").json()["CustomerAccount"] == "US-003"
    nested = api.get("SalesOrderHeadersV2", params={"$expand": "SalesOrderLines($expand=SalesOrderHeader)"})
    assert nested.status_code == 400


def test_unknown_query_options_and_format(api: D365Http) -> None:
    unknown = api.get("CustomersV3", params={"$search": "x"})
    assert unknown.status_code == 400
    assert "$search" in inner(unknown)
    assert api.get("CustomersV3", params={"$format": "json"}).status_code == 200
    assert api.get("CustomersV3", params={"$format": "atom"}).status_code == 406
    assert api.get("CustomersV3", params={"custom": "ignored"}).status_code == 200
    on_entity = api.get(CUSTOMER, params={"$top": "1"})
    assert on_entity.status_code == 400


# --- paging -----------------------------------------------------------------------------------------------


def pages(api: D365Http, path: str, size: int, **params: str) -> Iterator[dict[str, Any]]:
    headers = {"Prefer": f"odata.maxpagesize={size}"}
    response = api.get(path, params=params, headers=headers)
    while True:
        assert response.status_code == 200, response.text
        assert response.headers["Preference-Applied"] == f"odata.maxpagesize={size}"
        page = response.json()
        yield page
        link = page.get("@odata.nextLink")
        if not link:
            return
        assert link.startswith(f"{api.root}/{path}?")  # absolute, from the request's own base
        response = api.get(link, headers=headers)


def test_paging_with_nextlink_returns_every_row_once(api: D365Http) -> None:
    expected = api.get("CustomersV3", params={"cross-company": "true"}).json()["value"]
    got = [row for page in pages(api, "CustomersV3", 7, **{"cross-company": "true"}) for row in page["value"]]
    assert len(got) == len(expected) == 44
    assert got == expected
    sized = [len(page["value"]) for page in pages(api, "CustomersV3", 7, **{"cross-company": "true"})]
    assert sized == [7] * 6 + [2]
    # a custom order with ties, a filter and $count on every page
    params = {
        "cross-company": "true",
        "$orderby": "CreditLimit desc",
        "$filter": "CustomerGroupId ne '40'",
        "$count": "true",
        "$select": "dataAreaId,CustomerAccount,CreditLimit",
    }
    paged = list(pages(api, "CustomersV3", 4, **params))
    rows = [row for page in paged for row in page["value"]]
    assert {page["@odata.count"] for page in paged} == {len(rows)}
    assert rows == api.get("CustomersV3", params=params).json()["value"]
    assert len({(r["dataAreaId"], r["CustomerAccount"]) for r in rows}) == len(rows)
    # $top spanning pages stops exactly at $top; $skip applies once
    limited = [
        row for page in pages(api, "CustomersV3", 4, **{"$top": "10", "$skip": "3"}) for row in page["value"]
    ]
    assert [r["CustomerAccount"] for r in limited] == [f"US-{n:03d}" for n in range(4, 14)]
    # navigation collections page too
    order = "SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000003')"
    lines = [row for page in pages(api, f"{order}/SalesOrderLines", 1) for row in page["value"]]
    assert len(lines) == 4
    tampered = api.get("CustomersV3", params={"$skiptoken": "not-a-token"})
    assert tampered.status_code == 400


def test_page_size_is_capped_at_10000(api: D365Http) -> None:
    response = api.get("CustomersV3", params={"$top": "1"}, headers={"Prefer": "odata.maxpagesize=50000"})
    assert response.headers["Preference-Applied"] == "odata.maxpagesize=10000"


# --- writes -----------------------------------------------------------------------------------------------


def test_create_read_update_delete_with_etags(api: D365Http) -> None:
    created = api.post(
        "CustomersV3",
        json=new_customer(
            "T-100", CreditLimit=1500.5, OnHoldStatus="Invoice", CreatedDateTime="2025-06-01T10:00:00+02:00"
        ),
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["@odata.context"] == f"{api.root}/$metadata#CustomersV3/$entity"
    assert body["dataAreaId"] == "usmf"  # defaulted to the caller's company
    assert body["CreditLimit"] == 1500.5
    assert body["CreatedDateTime"] == "2025-06-01T08:00:00Z"  # normalised to UTC
    assert body["PaymentTerms"] == ""  # unset fields get F&O's empty values, not null
    assert created.headers["ETag"] == body["@odata.etag"]
    key = "CustomersV3(dataAreaId='usmf',CustomerAccount='T-100')"
    assert created.headers["Location"] == f"{api.root}/{key}"
    etag = created.headers["ETag"]
    assert etag_parts(etag)[0] == 1

    updated = api.patch(key, json={"OrganizationName": "Renamed"}, headers={"If-Match": etag})
    assert updated.status_code == 204
    new_etag = updated.headers["ETag"]
    assert etag_parts(new_etag) == (2, etag_parts(etag)[1])  # RecVersion increments, RecId stays
    assert api.get(key).json()["OrganizationName"] == "Renamed"

    stale = api.patch(key, json={"OrganizationName": "Lost update"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert inner(stale)
    assert api.get(key).json()["OrganizationName"] == "Renamed"
    assert api.patch(key, json={"NameAlias": "any"}, headers={"If-Match": "*"}).status_code == 204
    assert api.patch(key, json={"NameAlias": "none"}).status_code == 204  # no If-Match: no check

    key_change = api.patch(key, json={"CustomerAccount": "T-999"})
    assert key_change.status_code == 400
    assert "CustomerAccount" in inner(key_change)

    replaced = api.put(
        key,
        json={"CustomerGroupId": "20", "OrganizationName": "Replaced"},
        headers={"Prefer": "return=representation"},
    )
    assert replaced.status_code == 200
    assert replaced.json()["CreditLimit"] == 0  # PUT resets what it does not send
    assert replaced.json()["OnHoldStatus"] == "No"

    current = api.get(key).headers["ETag"]
    assert api.delete(key, headers={"If-Match": etag}).status_code == 412
    assert api.delete(key, headers={"If-Match": current}).status_code == 204
    assert api.get(key).status_code == 404
    assert api.delete(key).status_code == 404
    assert api.patch(key, json={"NameAlias": "x"}).status_code == 404


def test_create_minimal_and_other_company(api: D365Http) -> None:
    minimal = api.post(
        "CustomersV3", json=new_customer("T-200", dataAreaId="USRT"), headers={"Prefer": "return=minimal"}
    )
    assert minimal.status_code == 204
    assert minimal.content == b""
    assert minimal.headers["Preference-Applied"] == "return=minimal"
    assert minimal.headers["OData-EntityId"].endswith(
        "CustomersV3(dataAreaId='usrt',CustomerAccount='T-200')"
    )
    assert api.get(minimal.headers["Location"]).json()["dataAreaId"] == "usrt"


def test_write_validation_errors(api: D365Http) -> None:
    assert api.post("CustomersV3", json=new_customer("T-300")).status_code == 201
    duplicate = api.post("CustomersV3", json=new_customer("T-300"))
    assert duplicate.status_code == 400
    assert "The record already exists." in inner(duplicate)
    case_duplicate = api.post("CustomersV3", json=new_customer("t-300"))
    assert case_duplicate.status_code == 400
    cases = [
        ({"CustomerAccount": "T-301"}, "CustomerGroupId' must be filled in"),
        ({"OrganizationName": "no key", "CustomerGroupId": "10"}, "CustomerAccount' must be filled in"),
        (new_customer("T-302", Colour="red"), "The property 'Colour' does not exist"),
        (new_customer("T-303", CreditLimit="lots"), "Edm.Decimal"),
        (new_customer("T-304", OnHoldStatus="Sometimes"), "CustVendorBlocked"),
        (new_customer("T-305", CustomerGroupId="ZZ"), "not found in the relating table"),
        (new_customer("T-306", NameAlias="x" * 21), "at most 20"),
        (new_customer("T-307", CreatedDateTime="2025-06-01 10:00"), "Edm.DateTimeOffset"),
        (new_customer("T-308", dataAreaId="zzzz"), "Company 'zzzz' does not exist"),
    ]
    for payload, text in cases:
        response = api.post("CustomersV3", json=payload)
        assert response.status_code == 400, payload
        assert text in inner(response), (payload, inner(response))
    deep = api.post(
        "SalesOrderHeadersV2",
        json={
            "SalesOrderNumber": "T-1",
            "OrderingCustomerAccountNumber": "US-001",
            "SalesOrderLines": [{"ItemNumber": "D0001"}],
        },
    )
    assert deep.status_code == 400
    assert "deep insert" in inner(deep)
    not_json = api.post("CustomersV3", data=b"{not json", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert api.get("CustomersV3(dataAreaId='usmf',CustomerAccount='T-301')").status_code == 404


def test_delete_rules_restrict_and_cascade(api: D365Http) -> None:
    in_use = api.delete("CustomerGroups(dataAreaId='usmf',CustomerGroupId='10')")
    assert in_use.status_code == 400
    assert "Transactions exist" in inner(in_use)
    order = "SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000003')"
    assert api.delete(order).status_code == 204
    lines = api.get("SalesOrderLines", params={"$filter": "SalesOrderNumber eq '000003'"}).json()["value"]
    assert lines == []


# --- actions ----------------------------------------------------------------------------------------------


def test_entity_bound_action_succeeds_and_changes_state(api: D365Http) -> None:
    order = "SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000006')"
    before = api.get(order).json()
    response = api.post(f"{order}/{NS}.Confirm", json={})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "@odata.context": f"{api.root}/$metadata#Edm.String",
        "value": "USMF-CONF-000006",
    }
    after = api.get(order).json()
    assert after["DocumentStatus"] == "Confirmation"
    assert after["@odata.etag"] != before["@odata.etag"]


@pytest.mark.parametrize(
    ("number", "reason"),
    [
        ("000007", "has no lines"),
        ("000001", "on hold"),
        ("000005", "Canceled"),
    ],
)
def test_entity_bound_action_fails_like_d365(api: D365Http, number: str, reason: str) -> None:
    order = f"SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='{number}')"
    response = api.post(f"{order}/{NS}.Confirm")
    assert response.status_code == 500  # validation failures in actions are 500 (ref §1.7)
    message = inner(response)
    assert message.startswith(
        "Exception occurred while executing action Confirm on Entity SalesOrderHeaderV2: "
    )
    assert reason in message
    assert api.get(order).json()["DocumentStatus"] == "None"


def test_action_failure_rolls_back_and_credit_limit_check(api: D365Http) -> None:
    customer = "CustomersV3(dataAreaId='usmf',CustomerAccount='US-003')"
    assert api.patch(customer, json={"CreditLimit": 100}).status_code == 204
    response = api.post(f"SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000006')/{NS}.Confirm")
    assert response.status_code == 500
    assert "credit limit" in inner(response)


def test_collection_bound_and_void_actions(api: D365Http) -> None:
    count = api.post(f"CustomersV3/{NS}.GetCustomerCount", json={"CustomerGroupId": "10"})
    assert count.status_code == 200
    assert count.json() == {"@odata.context": f"{api.root}/$metadata#Edm.Int32", "value": 5}
    total = api.post(f"CustomersV3/{NS}.GetTotalCreditLimit", json={"CurrencyCode": "USD"}).json()
    assert total["value"] == sum(r["CreditLimit"] for r in api.get("CustomersV3").json()["value"])
    missing = api.post(f"CustomersV3/{NS}.GetTotalCreditLimit", json={})
    assert missing.status_code == 400
    assert "CurrencyCode" in inner(missing)
    unknown_param = api.post(f"CustomersV3/{NS}.GetCustomerCount", json={"Colour": "red"})
    assert unknown_param.status_code == 400
    no_currency = api.post(f"CustomersV3/{NS}.GetTotalCreditLimit", json={"CurrencyCode": "XYZ"})
    assert no_currency.status_code == 500
    held = api.post(f"{CUSTOMER}/{NS}.SetOnHoldStatus", json={"OnHoldStatus": "Payment"})
    assert held.status_code == 204
    assert api.get(CUSTOMER).json()["OnHoldStatus"] == "Payment"
    bad_enum = api.post(f"{CUSTOMER}/{NS}.SetOnHoldStatus", json={"OnHoldStatus": "Forever"})
    assert bad_enum.status_code == 400
    held_count = api.post(f"CustomersV3/{NS}.GetCustomerCount", json={"OnHoldStatus": "Payment"}).json()
    assert held_count["value"] == 1


def test_unbound_actions(api: D365Http) -> None:
    converted = api.post("ConvertCurrency", json={"Amount": 100, "FromCurrency": "EUR", "ToCurrency": "USD"})
    assert converted.status_code == 200
    assert converted.json() == {"@odata.context": f"{api.root}/$metadata#Edm.Decimal", "value": 108.0}
    failing = api.post("ConvertCurrency", json={"Amount": 1, "FromCurrency": "EUR", "ToCurrency": "XXX"})
    assert failing.status_code == 500
    assert inner(failing).startswith("Exception occurred while executing action ConvertCurrency: ")
    wrong_type = api.post(
        "ConvertCurrency", json={"Amount": "ten", "FromCurrency": "EUR", "ToCurrency": "USD"}
    )
    assert wrong_type.status_code == 400
    assert api.post("GetApplicationVersion").json()["value"].startswith("10.0")
    assert api.get("ConvertCurrency").status_code == 405
    assert api.post(f"CustomersV3/{NS}.NoSuchAction").status_code == 404


# --- bulk data --------------------------------------------------------------------------------------------


def test_seed_200k_rows_fast_and_page_a_slice(api: D365Http, clean_emulator: EmulatorInfo) -> None:
    started = time.perf_counter()
    result = clean_emulator.admin("POST", "seed", json={"entity_set": "CustomersV3", "count": 200_000})
    elapsed = time.perf_counter() - started
    try:
        check_seeded_slice(api, result, elapsed)
    finally:
        clean_emulator.admin("POST", "reset")  # leave the shared emulator small for the next module


def check_seeded_slice(api: D365Http, result: dict[str, Any], elapsed: float) -> None:
    assert result["rows"] == 200_044
    assert elapsed < 20, f"seeding 200k rows took {elapsed:.1f}s"
    assert api.get("CustomersV3/$count").content == b"\xef\xbb\xbf200020"
    started = time.perf_counter()
    seen: list[str] = []
    for page in pages(
        api,
        "CustomersV3",
        5000,
        **{"$skip": "150000", "$top": "15000", "$select": "CustomerAccount,OrganizationName"},
    ):
        seen.extend(row["CustomerAccount"] for row in page["value"])
    assert len(seen) == len(set(seen)) == 15_000
    assert seen == sorted(seen)
    full_page = api.get("CustomersV3", params={"$filter": "CustomerAccount ge 'C0100000'"})
    body = full_page.json()
    assert len(body["value"]) == 10_000  # the server-driven page limit (ref §1.4)
    assert "@odata.nextLink" in body
    assert time.perf_counter() - started < 20


def test_keys_with_quotes_slashes_and_spaces(api: D365Http) -> None:
    account = "Q'1/2 &3"
    escaped = account.replace("'", "''")  # OData doubles a quote inside a string literal
    assert api.post("CustomersV3", json=new_customer(account)).status_code == 201
    key = f"CustomersV3(dataAreaId='usmf',CustomerAccount='{quote(escaped, safe=chr(39))}')"
    response = api.get(key)
    assert response.status_code == 200, response.text
    assert response.json()["CustomerAccount"] == account
    found = api.get("CustomersV3", params={"$filter": f"CustomerAccount eq '{escaped}'"}).json()["value"]
    assert [row["CustomerAccount"] for row in found] == [account]
    assert api.delete(key).status_code == 204
