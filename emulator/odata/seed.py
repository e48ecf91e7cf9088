"""Believable, deterministic demo data (Contoso-style legal entities) and fast bulk row generators.

`demo_rows()` is the small data set a fresh emulator starts with; `bulk_rows()` yields any number of extra
rows as tuples in the table's property order, cheaply enough for ~10^5-10^6 rows/s into executemany.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Company:
    id: str
    name: str
    currency: str
    country: str
    city: str
    street: str
    zip: str
    language: str
    prefix: str  # customer/vendor account prefix used in the demo data


COMPANIES = (
    Company(
        "usmf",
        "Contoso Entertainment System USA",
        "USD",
        "USA",
        "Redmond",
        "123 Coffee Street",
        "98052",
        "en-us",
        "US",
    ),
    Company("usrt", "Contoso Retail USA", "USD", "USA", "Seattle", "1 Microsoft Way", "98101", "en-us", "US"),
    Company(
        "demf",
        "Contoso Entertainment System Germany",
        "EUR",
        "DEU",
        "Berlin",
        "Unter den Linden 50",
        "10117",
        "de",
        "DE",
    ),
    Company(
        "gbsi",
        "Contoso Entertainment System UK",
        "GBP",
        "GBR",
        "London",
        "100 Victoria Street",
        "SW1E 5JL",
        "en-gb",
        "GB",
    ),
    Company(
        "frrt",
        "Contoso Retail France",
        "EUR",
        "FRA",
        "Paris",
        "39 Quai du President Roosevelt",
        "92130",
        "fr",
        "FR",
    ),
)
COMPANY_BY_ID = {c.id: c for c in COMPANIES}
DEMO_DATA_VERSION = 1  # bump when demo_rows() changes: a kept database is then rebuilt

ORG_FIRST = (
    "Contoso",
    "Fabrikam",
    "Adatum",
    "Northwind",
    "Litware",
    "Proseware",
    "Tailspin",
    "Wingtip",
    "Woodgrove",
    "Coho",
    "Lucerne",
    "Fourth Coffee",
    "Alpine Ski House",
    "Trey Research",
    "Wide World",
    "Humongous",
    "Blue Yonder",
    "Relecloud",
    "VanArsdel",
    "Margie's Travel",
    "Bellows",
    "Lamna",
    "Munson's",
    "Southridge",
)
ORG_SECOND = (
    "Retail",
    "Wholesales",
    "Supplies",
    "Electronics",
    "Stores",
    "Trading",
    "Outlet",
    "Distribution",
    "Partners",
    "Group",
)
VENDOR_KINDS = ("Supplies", "Electronics", "Components", "Logistics")
CITIES = (  # city, state, zip, street
    ("Seattle", "WA", "98101", "Pike Street"),
    ("San Diego", "CA", "92101", "Harbor Drive"),
    ("Los Angeles", "CA", "90012", "Spring Street"),
    ("Dallas", "TX", "75201", "Elm Street"),
    ("Chicago", "IL", "60601", "Michigan Avenue"),
    ("Atlanta", "GA", "30303", "Peachtree Street"),
    ("Boston", "MA", "02108", "Beacon Street"),
    ("Denver", "CO", "80202", "Larimer Street"),
    ("Miami", "FL", "33131", "Brickell Avenue"),
    ("Portland", "OR", "97204", "Morrison Street"),
    ("Phoenix", "AZ", "85004", "Van Buren Street"),
    ("New York", "NY", "10007", "Broadway"),
)
_GROUPS = (
    ("10", "Wholesale customers", "Net30"),
    ("20", "Major customers", "Net45"),
    ("30", "Retail customers", "Net10"),
    ("40", "Internet customers", "COD"),
    ("80", "Other customers", "Net30"),
    ("90", "Intercompany customers", "Net30"),
)
PRODUCTS = (  # item, name, group, unit, sales price, purchase price, weight
    ("D0001", "MidRangeSpeaker2", "Speakers", "ea", 219.00, 104.50, 4.2),
    ("D0002", "Cabinet", "Speakers", "ea", 149.00, 71.25, 9.0),
    ("D0003", "Standard Speaker", "Speakers", "ea", 299.00, 150.00, 5.5),
    ("D0004", "High End Speaker", "Speakers", "ea", 1299.00, 620.00, 12.4),
    ("D0005", "Car Audio System", "CarAudio", "ea", 549.00, 262.00, 7.1),
    ("D0006", "Home Theater System", "TV&Video", "ea", 1899.00, 905.00, 21.0),
    ("T0001", "Speaker cable 10", "Cables", "ea", 19.90, 6.10, 0.4),
    ("T0002", "Projector Television", "TV&Video", "ea", 2499.00, 1190.00, 18.3),
    ("T0003", "Surround Sound Receiver", "Audio", "ea", 699.00, 330.00, 8.8),
    ("T0004", 'Television M12037 51"', "TV&Video", "ea", 1099.00, 540.00, 24.0),
    ("M0001", "Speaker enclosure", "Components", "ea", 35.00, 14.00, 1.1),
    ("M0002", "Tweeter", "Components", "ea", 22.50, 9.25, 0.2),
    ("M0003", "Woofer", "Components", "ea", 48.00, 19.40, 0.9),
    ("P0001", "Acoustic foam panel", "Components", "pcs", 4.75, 1.80, 0.1),
    ("S0001", "Installation service", "Services", "hr", 95.00, 0.00, 0.0),
)


def demo_time(day: int, hour: int = 9, minute: int = 0) -> str:
    """A deterministic UTC timestamp in 2025 (day 0 = 6 January 2025)."""
    month_days = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    ordinal = 5 + day % 350
    month = 0
    while ordinal >= month_days[month]:
        ordinal -= month_days[month]
        month += 1
    return f"2025-{month + 1:02d}-{ordinal + 1:02d}T{hour:02d}:{minute:02d}:00Z"


def slug(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _customer(company: Company, n: int, account: str) -> dict[str, Any]:
    city, state, zip_code, street = CITIES[n % len(CITIES)]
    first = ORG_FIRST[(n * 7) % len(ORG_FIRST)]
    name = f"{first} {ORG_SECOND[n % len(ORG_SECOND)]} {city}"
    group = _GROUPS[n % 4][0]
    foreign = company.country != "USA"
    return {
        "dataAreaId": company.id,
        "CustomerAccount": account,
        "OrganizationName": name,
        "NameAlias": slug(first)[:20],
        "CustomerGroupId": group,
        "CustomerType": "Person" if n % 9 == 4 else "Organization",
        "SalesCurrencyCode": company.currency,
        "CreditLimit": float((n % 8) * 25000),
        "CreditLimitIsMandatory": "Yes" if n % 3 == 0 else "No",
        "OnHoldStatus": ("No", "No", "No", "No", "Invoice", "No", "All")[n % 7],
        "PaymentTerms": _GROUPS[n % 4][2],
        "DeliveryMode": ("10", "20", "30")[n % 3],
        "InvoiceAccount": "",
        "SalesTaxGroup": "" if foreign else state,
        "AddressDescription": name,
        "AddressStreet": f"{100 + n * 13} {street}" if not foreign else company.street,
        "AddressCity": company.city if foreign else city,
        "AddressState": "" if foreign else state,
        "AddressZipCode": company.zip if foreign else zip_code,
        "AddressCountryRegionId": company.country,
        "PrimaryContactEmail": f"orders@{slug(first)}.example.com",
        "PrimaryContactPhone": f"+1 425-555-{1000 + n:04d}",
        "PersonGender": ("Female", "Male", "NonSpecific")[n % 3] if n % 9 == 4 else "Unknown",
        "LanguageId": company.language,
        "CreatedDateTime": demo_time(n * 3, 8 + n % 9, (n * 7) % 60),
        "ModifiedDateTime": demo_time(n * 3 + 20, 10 + n % 7, (n * 11) % 60),
    }


def demo_rows() -> dict[str, list[dict[str, Any]]]:
    """The seeded demo data set, in storage form (ref: storage contract in emulator/odata/store.py)."""
    rows: dict[str, list[dict[str, Any]]] = {
        name: []
        for name in (
            "LegalEntities",
            "CustomerGroups",
            "CustomersV3",
            "VendorsV2",
            "ReleasedProductsV2",
            "SalesOrderHeadersV2",
            "SalesOrderLines",
        )
    }
    for c in COMPANIES:
        rows["LegalEntities"].append(
            {
                "LegalEntityId": c.id.upper(),
                "Name": c.name,
                "AddressStreet": c.street,
                "AddressCity": c.city,
                "AddressZipCode": c.zip,
                "AddressCountryRegionId": c.country,
                "LanguageId": c.language,
                "AccountingCurrency": c.currency,
                "IsVirtual": False,
            }
        )
    customers_per_company = {"usmf": 20, "usrt": 8, "demf": 8, "gbsi": 8, "frrt": 0}
    for c in COMPANIES:
        if customers_per_company[c.id] == 0:
            continue
        for gid, desc, terms in _GROUPS:
            rows["CustomerGroups"].append(
                {
                    "dataAreaId": c.id,
                    "CustomerGroupId": gid,
                    "Description": desc,
                    "PaymentTermId": terms,
                    "IsSalesTaxIncludedInPrice": "Yes" if c.country != "USA" else "No",
                    "TaxGroupId": "" if c.country == "USA" else "DOM",
                }
            )
        for n in range(1, customers_per_company[c.id] + 1):
            rows["CustomersV3"].append(_customer(c, n, f"{c.prefix}-{n:03d}"))
        for n in range(1, {"usmf": 10, "usrt": 4, "demf": 5, "gbsi": 4}[c.id] + 1):
            first = ORG_FIRST[(n * 5 + 3) % len(ORG_FIRST)]
            rows["VendorsV2"].append(
                {
                    "dataAreaId": c.id,
                    "VendorAccountNumber": f"{c.prefix}-{100 + n}",
                    "VendorOrganizationName": f"{first} {VENDOR_KINDS[n % 4]}",
                    "VendorSearchName": slug(first)[:20],
                    "VendorGroupId": ("10", "20", "30")[n % 3],
                    "CurrencyCode": c.currency,
                    "DefaultPaymentTermsName": ("Net30", "Net45", "Net10")[n % 3],
                    "OnHoldStatus": "Payment" if n % 6 == 5 else "No",
                    "IsMinorityOwned": "Yes" if n % 4 == 1 else "No",
                    "AddressStreet": f"{20 + n * 17} Industrial Way",
                    "AddressCity": c.city,
                    "AddressZipCode": c.zip,
                    "AddressCountryRegionId": c.country,
                    "PrimaryEmailAddress": f"sales@{slug(first)}.example.com",
                    "PrimaryPhoneNumber": f"+1 206-555-{2000 + n:04d}",
                    "CreatedDateTime": demo_time(n * 5, 7 + n % 8),
                }
            )
        if c.id in ("usmf", "demf", "gbsi"):
            factor = {"usmf": 1.0, "demf": 0.92, "gbsi": 0.79}[c.id]
            for item, name, group, unit, price, cost, weight in PRODUCTS:
                service = group == "Services"
                rows["ReleasedProductsV2"].append(
                    {
                        "dataAreaId": c.id,
                        "ItemNumber": item,
                        "ProductNumber": item,
                        "ProductName": name,
                        "SearchName": slug(name)[:20],
                        "ProductType": "Service" if service else "Item",
                        "ProductGroupId": group,
                        "ItemModelGroupId": "SRV" if service else "FIFO",
                        "InventoryUnitSymbol": unit,
                        "SalesUnitSymbol": unit,
                        "PurchaseUnitSymbol": unit,
                        "SalesPrice": round(price * factor, 2),
                        "PurchasePrice": round(cost * factor, 2),
                        "NetProductWeight": weight,
                        "IsPurchasePriceAutomaticallyUpdated": "No",
                    }
                )
    _demo_orders(rows)
    return rows


def _demo_orders(rows: dict[str, list[dict[str, Any]]]) -> None:
    orders = {"usmf": 16, "demf": 5, "gbsi": 4}
    statuses = ("Backorder", "Backorder", "Delivered", "Invoiced", "Backorder", "Canceled")
    for company_id, count in orders.items():
        c = COMPANY_BY_ID[company_id]
        lot = 0
        for n in range(1, count + 1):
            number = f"{n:06d}"
            customer = f"{c.prefix}-{(n * 5) % 7 + 1:03d}"
            status = statuses[n % len(statuses)]
            rows["SalesOrderHeadersV2"].append(
                {
                    "dataAreaId": c.id,
                    "SalesOrderNumber": number,
                    "OrderingCustomerAccountNumber": customer,
                    "InvoiceCustomerAccountNumber": customer,
                    "SalesOrderName": f"Order {number} for {customer}",
                    "CurrencyCode": c.currency,
                    "SalesOrderStatus": status,
                    "DocumentStatus": {"Delivered": "PackingSlip", "Invoiced": "Invoice"}.get(
                        status, "Confirmation" if n % 4 == 0 else "None"
                    ),
                    "CustomersOrderReference": f"PO-{4400 + n * 7}" if n % 2 else "",
                    "RequestedShippingDate": demo_time(30 + n * 4, 12),
                    "RequestedReceiptDate": demo_time(33 + n * 4, 12),
                    "DeliveryModeCode": ("10", "20", "30")[n % 3],
                    "PaymentTermsName": "Net30",
                    "DeliveryAddressCity": c.city,
                    "DeliveryAddressCountryRegionId": c.country,
                    "TotalDiscountPercentage": float(n % 3 * 5),
                    "OrderCreationDateTime": demo_time(28 + n * 4, 9, n % 60),
                }
            )
            line_count = (
                0 if n == 7 else 1 + n % 4
            )  # order 000007 has no lines (the Confirm sample fails on it)
            for line in range(1, line_count + 1):
                lot += 1
                item, name, _group, unit, price, _cost, _weight = PRODUCTS[(n * 3 + line) % len(PRODUCTS)]
                quantity = float((n + line) % 5 + 1)
                rows["SalesOrderLines"].append(
                    {
                        "dataAreaId": c.id,
                        "InventoryLotId": f"{c.id.upper()}-{lot:06d}",
                        "SalesOrderNumber": number,
                        "LineNumber": float(line),
                        "LineCreationSequenceNumber": line,
                        "ItemNumber": item,
                        "LineDescription": name,
                        "OrderedSalesQuantity": quantity,
                        "SalesUnitSymbol": unit,
                        "SalesPrice": price,
                        "LineDiscountAmount": 0.0,
                        "LineAmount": round(quantity * price, 2),
                        "SalesOrderLineStatus": status,
                        "RequestedShippingDate": demo_time(30 + n * 4, 12),
                        "ShippingSiteId": "1",
                        "ShippingWarehouseId": ("11", "12", "13")[line % 3],
                    }
                )
