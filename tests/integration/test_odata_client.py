"""The OData client against the real emulator over real HTTP: paging, filters, companies, CRUD, actions."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.d365.errors import D365ConflictError, D365HTTPError, D365NotFoundError
from shared.d365.odata import ODataClient
from shared.d365.odata_query import Enum, F, Filter
from shared.d365.transport import D365Transport
from tests.support.d365 import make_transport
from tests.support.stack import EmulatorInfo

CUSTOMERS = "CustomersV3"


@pytest.fixture
def transport(clean_emulator: EmulatorInfo) -> Iterator[D365Transport]:
    with make_transport(clean_emulator) as t:
        yield t


@pytest.fixture
def client(transport: D365Transport) -> ODataClient:
    return ODataClient(transport)


@pytest.fixture
def many_customers(clean_emulator: EmulatorInfo) -> int:
    """Seed some thousands of extra customers in the default company; returns the set's total row count."""
    return int(clean_emulator.admin("POST", "seed", json={"entity_set": CUSTOMERS, "count": 4000})["rows"])


def key_of(row: dict[str, Any]) -> tuple[str, str]:
    return row["dataAreaId"], row["CustomerAccount"]


# ---------------------------------------------------------------------------------------------- paging


def test_paging_yields_every_row_exactly_once(client: ODataClient, many_customers: int) -> None:
    pager = client.list(
        CUSTOMERS, cross_company=True, page_size=300, select=["dataAreaId", "CustomerAccount"]
    )
    pages = pager.by_page()
    sizes: list[int] = []
    keys: list[tuple[str, str]] = []
    for page in pages:
        sizes.append(len(page))
        keys.extend(key_of(row) for row in page)
    assert len(keys) == len(set(keys)) == many_customers == client.count(CUSTOMERS, cross_company=True)
    assert len(sizes) == -(-many_customers // 300)
    assert max(sizes) <= 300
    assert pages.continuation_token is None


def test_paging_memory_stays_flat(client: ODataClient, many_customers: int) -> None:
    """Streaming all pages must hold about one page, far below what materialising every row takes."""

    def peak(consume: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            consume()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    streamed = peak(lambda: sum(1 for _ in client.list(CUSTOMERS, page_size=200)))
    materialised = peak(lambda: list(client.list(CUSTOMERS, page_size=200)))
    assert streamed < 0.35 * materialised, (streamed, materialised)


def test_top_is_honoured_across_pages(client: ODataClient, many_customers: int) -> None:
    pager = client.list(CUSTOMERS, top=730, page_size=250, orderby="CustomerAccount")
    assert [len(page) for page in pager.by_page()] == [250, 250, 230]
    rows = list(pager)
    assert len(rows) == 730
    assert [r["CustomerAccount"] for r in rows] == sorted(r["CustomerAccount"] for r in rows)
    assert list(client.list(CUSTOMERS, top=0)) == []


def test_continuation_token_resumes_paging(client: ODataClient, many_customers: int) -> None:
    pager = client.list(CUSTOMERS, page_size=1000, select="CustomerAccount", orderby="CustomerAccount")
    pages = pager.by_page()
    first = next(pages)
    token = pages.continuation_token
    assert token is not None
    rest = [row for page in pager.by_page(token) for row in page]
    accounts = [r["CustomerAccount"] for r in first + rest]
    assert len(accounts) == len(set(accounts)) == client.count(CUSTOMERS)


def test_inline_count(client: ODataClient) -> None:
    pages = client.list(CUSTOMERS, count=True, top=1).by_page()
    assert len(next(pages)) == 1
    assert pages.count == client.count(CUSTOMERS)


def test_dropped_connection_mid_page_is_retried(
    clean_emulator: EmulatorInfo, transport: D365Transport, client: ODataClient, many_customers: int
) -> None:
    expected = client.count(CUSTOMERS)
    rule = {
        "family": "odata",
        "path_prefix": f"/data/{CUSTOMERS}",
        "method": "GET",
        "drop_rate": 1.0,
        "drop_mode": "mid_body",
        "count": 2,
    }
    clean_emulator.admin("PUT", "faults", json={"rules": [rule]})
    accounts = [r["CustomerAccount"] for r in client.list(CUSTOMERS, page_size=500, select="CustomerAccount")]
    assert len(accounts) == len(set(accounts)) == expected
    injected = clean_emulator.admin("GET", "faults")["injected"]
    assert sum(injected.values()) >= 2, injected
    assert sum(transport.stats.snapshot()["retries"].values()) >= 2


# ---------------------------------------------------------------------------------------------- filters


def test_builder_filters_return_the_right_rows(client: ODataClient, many_customers: int) -> None:
    fields = ["dataAreaId", "CustomerAccount", "CustomerGroupId", "OrganizationName", "CreditLimit"]
    fields += ["CreditLimitIsMandatory", "CreatedDateTime", "PrimaryContactEmail"]
    everything = list(client.list(CUSTOMERS, select=fields, page_size=2000))
    since = datetime(2025, 1, 7, tzinfo=UTC)

    def created(row: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(row["CreatedDateTime"].replace("Z", "+00:00"))

    cases: list[tuple[Filter, Callable[[dict[str, Any]], bool]]] = [
        (F("CustomerGroupId") == "10", lambda r: r["CustomerGroupId"] == "10"),
        (F("CustomerGroupId").in_(["10", "20"]), lambda r: r["CustomerGroupId"] in ("10", "20")),
        (F("OrganizationName").contains("retail"), lambda r: "retail" in r["OrganizationName"].lower()),
        (
            F("OrganizationName").startswith("contoso"),
            lambda r: r["OrganizationName"].lower().startswith("contoso"),
        ),
        (
            F("OrganizationName").endswith("Denver"),
            lambda r: r["OrganizationName"].lower().endswith("denver"),
        ),
        (F("CreditLimit") > 20000, lambda r: r["CreditLimit"] > 20000),
        (
            F("CreditLimitIsMandatory") == Enum("NoYes", "Yes"),
            lambda r: r["CreditLimitIsMandatory"] == "Yes",
        ),
        (F("CreatedDateTime") >= since, lambda r: created(r) >= since),
        (
            ~(F("CustomerGroupId") == "10")
            & ((F("CreditLimit") <= 5000) | F("OrganizationName").contains("o'")),
            lambda r: (
                r["CustomerGroupId"] != "10"
                and (r["CreditLimit"] <= 5000 or "o'" in r["OrganizationName"].lower())
            ),
        ),
    ]
    for built, predicate in cases:
        got = {key_of(r) for r in client.list(CUSTOMERS, filter=built, select=fields, page_size=2000)}
        expected = {key_of(r) for r in everything if predicate(r)}
        assert expected, f"no rows to check for {built}"
        assert got == expected, str(built)
        assert client.count(CUSTOMERS, filter=built) == len(expected)
    raw = client.list(CUSTOMERS, filter="CustomerGroupId eq '10'", select=fields)
    assert {key_of(r) for r in raw} == {key_of(r) for r in everything if r["CustomerGroupId"] == "10"}


def test_cross_company_versus_default_company(client: ODataClient) -> None:
    default_rows = list(client.list(CUSTOMERS, select=["dataAreaId", "CustomerAccount"]))
    assert default_rows
    assert {r["dataAreaId"] for r in default_rows} == {"usmf"}
    every = list(client.list(CUSTOMERS, cross_company=True, select=["dataAreaId", "CustomerAccount"]))
    companies = {r["dataAreaId"] for r in every}
    assert {"usmf", "usrt"} <= companies
    assert (
        client.count(CUSTOMERS)
        == len(default_rows)
        < client.count(CUSTOMERS, cross_company=True)
        == len(every)
    )
    usrt = list(client.list(CUSTOMERS, filter=F("dataAreaId") == "usrt", cross_company=True))
    assert usrt
    assert all(r["dataAreaId"] == "usrt" for r in usrt)
    cross_default = ODataClient(client._transport, default_cross_company=True)
    assert cross_default.count(CUSTOMERS) == len(every)


# ---------------------------------------------------------------------------------------------- CRUD


AWKWARD = "O'B A/B #1?%&+"


def test_create_get_update_with_etag_and_delete(client: ODataClient) -> None:
    key = {"dataAreaId": "usmf", "CustomerAccount": AWKWARD}
    created = client.create(CUSTOMERS, {**key, "CustomerGroupId": "10", "OrganizationName": "O'Brien & Co"})
    assert created["CustomerAccount"] == AWKWARD
    etag = created.get("@odata.etag")
    fetched = client.get(CUSTOMERS, key, select=["CustomerAccount", "OrganizationName"])
    assert fetched["OrganizationName"] == "O'Brien & Co"
    etag = etag or fetched["@odata.etag"]
    assert client.list(CUSTOMERS, filter=F("CustomerAccount") == AWKWARD).by_page().__next__()[0][
        "CustomerAccount"
    ] == (AWKWARD)

    new_etag = client.update(CUSTOMERS, key, {"CreditLimit": 1234.5}, etag=etag)
    assert client.get(CUSTOMERS, key)["CreditLimit"] == 1234.5
    with pytest.raises(D365ConflictError) as stale:
        client.update(CUSTOMERS, key, {"CreditLimit": 1}, etag=etag)
    assert stale.value.status_code == 412
    current = new_etag or client.get(CUSTOMERS, key)["@odata.etag"]
    with pytest.raises(D365ConflictError):
        client.delete(CUSTOMERS, key, etag=etag)
    client.delete(CUSTOMERS, key, etag=current)
    with pytest.raises(D365NotFoundError):
        client.get(CUSTOMERS, key)


def test_update_without_etag_and_replace(client: ODataClient) -> None:
    key = {"dataAreaId": "usmf", "CustomerAccount": "REPL 1"}
    client.create(CUSTOMERS, {**key, "CustomerGroupId": "10", "OrganizationName": "First"})
    client.update(CUSTOMERS, key, {"OrganizationName": "Second"})
    assert client.get(CUSTOMERS, key)["OrganizationName"] == "Second"
    client.replace(CUSTOMERS, key, {**key, "CustomerGroupId": "20", "OrganizationName": "Third"})
    row = client.get(CUSTOMERS, key)
    assert (row["OrganizationName"], row["CustomerGroupId"]) == ("Third", "20")


def test_get_single_key_entity_and_not_found(client: ODataClient) -> None:
    assert client.get("LegalEntities", "USMF")["LegalEntityId"].lower() == "usmf"
    with pytest.raises(D365NotFoundError):
        client.get(CUSTOMERS, {"dataAreaId": "usmf", "CustomerAccount": "does not exist"})


def test_duplicate_create_is_a_typed_error(client: ODataClient) -> None:
    values = {"dataAreaId": "usmf", "CustomerAccount": "DUP-1", "CustomerGroupId": "10"}
    client.create(CUSTOMERS, values)
    with pytest.raises(D365HTTPError) as duplicate:
        client.create(CUSTOMERS, values)
    assert duplicate.value.status_code in (400, 409, 500)
    assert duplicate.value.message


# ---------------------------------------------------------------------------------------------- actions


def test_bound_and_unbound_actions(client: ODataClient) -> None:
    groups = client.call_action(CUSTOMERS, "GetCustomerCount", parameters={"CustomerGroupId": "10"})
    assert groups == client.count(CUSTOMERS, filter=F("CustomerGroupId") == "10")
    assert client.call_unbound_action("GetApplicationVersion")
    assert (
        client.call_unbound_action(
            "ConvertCurrency", {"Amount": 10, "FromCurrency": "USD", "ToCurrency": "USD"}
        )
        == 10
    )
    key = {"dataAreaId": "usmf", "CustomerAccount": "ACT 1/2"}
    client.create(CUSTOMERS, {**key, "CustomerGroupId": "10"})
    assert (
        client.call_action(CUSTOMERS, "SetOnHoldStatus", key=key, parameters={"OnHoldStatus": "All"}) is None
    )
    assert client.get(CUSTOMERS, key)["OnHoldStatus"] == "All"
    with pytest.raises(D365HTTPError) as failed:
        client.call_action(CUSTOMERS, "GetTotalCreditLimit", parameters={"CurrencyCode": "XXX"})
    assert "XXX" in failed.value.message
