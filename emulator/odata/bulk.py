"""Bulk generation of believable rows: ``ODataStore.seed()`` fills a set with 10^5-10^6 rows this way.

Binding parameters is what costs most in executemany, so a generator's plan names the columns that vary per
row and gives the rest as constants written into the INSERT as literals (~150k rows/s on one core).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from emulator.odata.catalog import EMPTY_DATETIME
from emulator.odata.schema import EntityType
from emulator.odata.seed import (
    CITIES,
    COMPANY_BY_ID,
    ORG_FIRST,
    ORG_SECOND,
    PRODUCTS,
    Company,
    demo_time,
    slug,
)
from emulator.odata.store import default_value, quote_ident


@dataclass(frozen=True)
class BulkContext:
    """What a generator may draw on: the company, the first sequence number, related keys in that company."""

    company: Company
    start: int
    related: dict[str, Sequence[str]]  # e.g. {"CustomerGroupId": [...], "ItemNumber": [...]}


@dataclass
class BulkPlan:
    columns: tuple[str, ...]  # the columns each generated tuple fills, in order
    rows: Iterator[tuple[Any, ...]]
    constants: dict[str, Any]  # the same for every row; unnamed columns get the F&O empty value


BulkGenerator = Callable[[BulkContext, int], BulkPlan]

# The key prefix of generated rows per set: seed() numbers new keys after the highest existing one.
BULK_KEY_PREFIX = {
    "CustomersV3": "C",
    "VendorsV2": "V",
    "CustomerGroups": "G",
    "ReleasedProductsV2": "I",
    "SalesOrderHeadersV2": "SO",
    "SalesOrderLines": "L",
}
# Related values a generator needs: (field of the generated row, set to read, field of that set).
BULK_RELATED: dict[str, tuple[tuple[str, str, str], ...]] = {
    "CustomersV3": (("CustomerGroupId", "CustomerGroups", "CustomerGroupId"),),
    "SalesOrderHeadersV2": (("OrderingCustomerAccountNumber", "CustomersV3", "CustomerAccount"),),
    "SalesOrderLines": (
        ("SalesOrderNumber", "SalesOrderHeadersV2", "SalesOrderNumber"),
        ("ItemNumber", "ReleasedProductsV2", "ItemNumber"),
    ),
}
_STAMPS = tuple(demo_time(d, 8 + d % 10, d % 60) for d in range(350))


def _gen_customers(ctx: BulkContext, count: int) -> BulkPlan:
    c = ctx.company
    groups = list(ctx.related.get("CustomerGroupId") or ["10"])
    places = [
        (f"{a} {b} {city}", slug(a)[:20], f"orders@{slug(a)}.example.com", city, state, zip_code, street)
        for a in ORG_FIRST
        for b in ORG_SECOND
        for city, state, zip_code, street in CITIES
    ]
    streets = [f"{100 + i} {p[6]}" for i in range(7) for p in places[: len(CITIES)]]
    phones = [f"+1 425-555-{i:04d}" for i in range(10000)]
    limits = [float(i * 25000) for i in range(8)]
    on_hold = ("No", "No", "No", "No", "Invoice", "No", "All")

    def rows() -> Iterator[tuple[Any, ...]]:
        n_places, n_groups, n_streets = len(places), len(groups), len(streets)
        for n in range(ctx.start, ctx.start + count):
            name, alias, email, city, state, zip_code, _ = places[(n * 7) % n_places]
            stamp = _STAMPS[n % 350]
            yield (
                f"C{n:07d}",
                name,
                alias,
                groups[n % n_groups],
                limits[n % 8],
                on_hold[n % 7],
                state,
                name,
                streets[n % n_streets],
                city,
                state,
                zip_code,
                email,
                phones[n % 10000],
                stamp,
                stamp,
            )

    return BulkPlan(
        (
            "CustomerAccount",
            "OrganizationName",
            "NameAlias",
            "CustomerGroupId",
            "CreditLimit",
            "OnHoldStatus",
            "SalesTaxGroup",
            "AddressDescription",
            "AddressStreet",
            "AddressCity",
            "AddressState",
            "AddressZipCode",
            "PrimaryContactEmail",
            "PrimaryContactPhone",
            "CreatedDateTime",
            "ModifiedDateTime",
        ),
        rows(),
        {
            "dataAreaId": c.id,
            "CustomerType": "Organization",
            "SalesCurrencyCode": c.currency,
            "CreditLimitIsMandatory": "No",
            "PaymentTerms": "Net30",
            "DeliveryMode": "10",
            "AddressCountryRegionId": c.country,
            "PersonGender": "Unknown",
            "LanguageId": c.language,
        },
    )


def _gen_vendors(ctx: BulkContext, count: int) -> BulkPlan:
    c = ctx.company
    names = [(f"{a} {b}", slug(a)[:20]) for a in ORG_FIRST for b in ORG_SECOND]

    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(ctx.start, ctx.start + count):
            name, alias = names[n % len(names)]
            yield (
                f"V{n:07d}",
                name,
                alias,
                ("10", "20", "30")[n % 3],
                f"{n % 900 + 1} Industrial Way",
                f"sales{n}@example.com",
                f"+1 206-555-{n % 10000:04d}",
                _STAMPS[n % 350],
            )

    return BulkPlan(
        (
            "VendorAccountNumber",
            "VendorOrganizationName",
            "VendorSearchName",
            "VendorGroupId",
            "AddressStreet",
            "PrimaryEmailAddress",
            "PrimaryPhoneNumber",
            "CreatedDateTime",
        ),
        rows(),
        {
            "dataAreaId": c.id,
            "CurrencyCode": c.currency,
            "DefaultPaymentTermsName": "Net30",
            "OnHoldStatus": "No",
            "IsMinorityOwned": "No",
            "AddressCity": c.city,
            "AddressZipCode": c.zip,
            "AddressCountryRegionId": c.country,
        },
    )


def _gen_groups(ctx: BulkContext, count: int) -> BulkPlan:
    rows = ((f"G{n:07d}", f"Customer group {n}") for n in range(ctx.start, ctx.start + count))
    return BulkPlan(
        ("CustomerGroupId", "Description"),
        rows,
        {"dataAreaId": ctx.company.id, "PaymentTermId": "Net30", "IsSalesTaxIncludedInPrice": "No"},
    )


def _gen_products(ctx: BulkContext, count: int) -> BulkPlan:
    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(ctx.start, ctx.start + count):
            _item, name, group, unit, price, cost, weight = PRODUCTS[n % len(PRODUCTS)]
            item = f"I{n:07d}"
            yield (
                item,
                item,
                f"{name} {n}",
                slug(name)[:20],
                "Service" if group == "Services" else "Item",
                group,
                unit,
                unit,
                unit,
                price,
                cost,
                weight,
            )

    return BulkPlan(
        (
            "ItemNumber",
            "ProductNumber",
            "ProductName",
            "SearchName",
            "ProductType",
            "ProductGroupId",
            "InventoryUnitSymbol",
            "SalesUnitSymbol",
            "PurchaseUnitSymbol",
            "SalesPrice",
            "PurchasePrice",
            "NetProductWeight",
        ),
        rows(),
        {
            "dataAreaId": ctx.company.id,
            "ItemModelGroupId": "FIFO",
            "IsPurchasePriceAutomaticallyUpdated": "No",
        },
    )


def _gen_orders(ctx: BulkContext, count: int) -> BulkPlan:
    c = ctx.company
    customers = list(ctx.related.get("OrderingCustomerAccountNumber") or [])
    if not customers:
        raise ValueError(f"company {c.id} has no customers to generate sales orders for")

    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(ctx.start, ctx.start + count):
            customer = customers[n % len(customers)]
            yield (
                f"SO{n:07d}",
                customer,
                customer,
                f"Generated order {n}",
                _STAMPS[n % 350],
                _STAMPS[(n + 3) % 350],
                _STAMPS[(n + 340) % 350],
            )

    return BulkPlan(
        (
            "SalesOrderNumber",
            "OrderingCustomerAccountNumber",
            "InvoiceCustomerAccountNumber",
            "SalesOrderName",
            "RequestedShippingDate",
            "RequestedReceiptDate",
            "OrderCreationDateTime",
        ),
        rows(),
        {
            "dataAreaId": c.id,
            "CurrencyCode": c.currency,
            "SalesOrderStatus": "Backorder",
            "DocumentStatus": "None",
            "DeliveryModeCode": "10",
            "PaymentTermsName": "Net30",
            "DeliveryAddressCity": c.city,
            "DeliveryAddressCountryRegionId": c.country,
        },
    )


def _gen_lines(ctx: BulkContext, count: int) -> BulkPlan:
    c = ctx.company
    orders = list(ctx.related.get("SalesOrderNumber") or [])
    items = list(ctx.related.get("ItemNumber") or [])
    if not orders or not items:
        raise ValueError(f"company {c.id} needs sales orders and released products to generate lines")

    def rows() -> Iterator[tuple[Any, ...]]:
        for n in range(ctx.start, ctx.start + count):
            quantity = float(n % 5 + 1)
            yield (
                f"L{n:09d}",
                orders[n % len(orders)],
                float(n % 10 + 1),
                n % 10 + 1,
                items[n % len(items)],
                f"Generated line {n}",
                quantity,
                quantity * 10.0,
            )

    return BulkPlan(
        (
            "InventoryLotId",
            "SalesOrderNumber",
            "LineNumber",
            "LineCreationSequenceNumber",
            "ItemNumber",
            "LineDescription",
            "OrderedSalesQuantity",
            "LineAmount",
        ),
        rows(),
        {
            "dataAreaId": c.id,
            "SalesUnitSymbol": "ea",
            "SalesPrice": 10.0,
            "SalesOrderLineStatus": "Backorder",
            "RequestedShippingDate": EMPTY_DATETIME,
            "ShippingSiteId": "1",
            "ShippingWarehouseId": "11",
        },
    )


BULK_GENERATORS: dict[str, BulkGenerator] = {
    "CustomersV3": _gen_customers,
    "VendorsV2": _gen_vendors,
    "CustomerGroups": _gen_groups,
    "ReleasedProductsV2": _gen_products,
    "SalesOrderHeadersV2": _gen_orders,
    "SalesOrderLines": _gen_lines,
}


def bulk_insert(conn: sqlite3.Connection, entity: EntityType, count: int, company_id: str) -> None:
    """Insert ``count`` generated rows into ``entity``'s table inside the caller's transaction."""
    generator = BULK_GENERATORS.get(entity.set_name)
    if generator is None:
        raise ValueError(f"the emulator cannot generate rows for {entity.set_name}")
    if not count:
        return
    company = COMPANY_BY_ID.get(company_id) or _company_from_db(conn, company_id)
    related: dict[str, Sequence[str]] = {}
    for field, source, source_field in BULK_RELATED.get(entity.set_name, ()):
        related[field] = [
            row[0]
            for row in conn.execute(
                f"SELECT {quote_ident(source_field)} FROM {quote_ident(source)} WHERE dataAreaId = ? "
                "ORDER BY 1 LIMIT 10000",
                (company_id,),
            )
        ]
    start = _next_number(conn, entity, BULK_KEY_PREFIX[entity.set_name])
    plan = generator(BulkContext(company, start, related), count)
    fixed = [p for p in entity.properties if p.name not in set(plan.columns)]
    names = [*plan.columns, *(p.name for p in fixed)]
    values = ["?"] * len(plan.columns) + [
        sql_literal(plan.constants.get(p.name, default_value(p))) for p in fixed
    ]
    conn.executemany(
        f"INSERT INTO {quote_ident(entity.set_name)} ({', '.join(map(quote_ident, names))}) "
        f"VALUES ({', '.join(values)})",
        plan.rows,
    )


def _next_number(conn: sqlite3.Connection, entity: EntityType, prefix: str) -> int:
    """Generated keys are numbered after the highest existing one with the same prefix."""
    key = quote_ident(entity.keys[-1])
    row = conn.execute(
        f"SELECT MAX(CAST(substr({key}, ?) AS INTEGER)) FROM {quote_ident(entity.set_name)} "
        f"WHERE {key} GLOB ?",
        (len(prefix) + 1, f"{prefix}[0-9]*"),
    ).fetchone()
    return int(row[0] or 0) + 1


def sql_literal(value: Any) -> str:
    """A constant written into generated SQL (bulk seeding binds only what varies per row)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def _company_from_db(conn: sqlite3.Connection, company_id: str) -> Company:
    """A legal entity that is not one of the demo companies (e.g. a configured default 'dat')."""
    row = (
        conn.execute(
            'SELECT "Name", "AccountingCurrency", "AddressCountryRegionId", "AddressCity", "AddressStreet", '
            '"AddressZipCode", "LanguageId" FROM "LegalEntities" WHERE "LegalEntityId" = ?',
            (company_id,),
        ).fetchone()
        if _has_table(conn, "LegalEntities")
        else None
    )
    if row is None:
        return Company(
            company_id,
            f"Company {company_id.upper()}",
            "USD",
            "USA",
            "Redmond",
            "1 Main Street",
            "98052",
            "en-us",
            company_id[:2].upper(),
        )
    name, currency, country, city, street, zip_code, language = row
    return Company(
        company_id,
        name,
        currency or "USD",
        country or "USA",
        city,
        street,
        zip_code,
        language or "en-us",
        company_id[:2].upper(),
    )


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return row is not None
