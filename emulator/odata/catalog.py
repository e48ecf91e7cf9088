"""The entity sets the emulator serves under /data, with the real F&O public collection and field names.

Field names follow the standard entities (CustomersV3, VendorsV2, ...) so code written against the emulator
runs against D365; a few fields are emulator samples and say so. Everything else (tables, $metadata,
validation, serialisation) is derived from this one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.odata.schema import (
    EDM_BOOLEAN,
    EDM_DATETIMEOFFSET,
    EDM_DECIMAL,
    EDM_ENUM,
    EDM_INT32,
    EDM_STRING,
    Catalog,
    EntityType,
    EnumType,
    Navigation,
    Property,
)

# --- enums (names and members as in the F&O application; ref §1.3 for the literal syntax) -----------------
NO_YES = EnumType("NoYes", ("No", "Yes"))
GENDER = EnumType("Gender", ("Unknown", "Male", "Female", "NonSpecific"))
CUST_VENDOR_BLOCKED = EnumType(
    "CustVendorBlocked", ("No", "Invoice", "All", "Payment", "Requisition", "Never")
)
CUSTOMER_TYPE = EnumType("CustomerType", ("Person", "Organization"))  # emulator sample enum
SALES_STATUS = EnumType("SalesStatus", ("None", "Backorder", "Delivered", "Invoiced", "Canceled"))
DOCUMENT_STATUS = EnumType(
    "DocumentStatus",
    ("None", "Quotation", "PurchaseOrder", "Confirmation", "PickingList", "PackingSlip", "Invoice"),
)
PRODUCT_TYPE = EnumType("EcoResProductType", ("Item", "Service"))

# The value F&O stores for an empty date (ref §1.3: its OData serialisation is UNCONFIRMED; we send it as is).
EMPTY_DATETIME = "1900-01-01T00:00:00Z"


@dataclass(frozen=True)
class Reference:
    """A foreign key checked on write, like the table relations F&O validates in validateWrite (ref §1.5)."""

    field: str
    target_set: str
    target_field: str
    target_label: str  # table label used in the D365-style message
    cascade: bool = False  # deleting the target deletes the referencing rows (else the delete is refused)


@dataclass(frozen=True)
class EntityInfo:
    """What the schema does not carry: labels for D365-style messages and write-time rules."""

    entity: EntityType
    label: str  # entity label, e.g. "Customers V3"
    aot_name: str  # AOT entity name, e.g. "CustCustomerV3Entity"
    references: tuple[Reference, ...] = ()
    stamps_created: str | None = None  # DateTimeOffset property set on create
    stamps_modified: str | None = None  # DateTimeOffset property set on every write


def _s(
    name: str, max_length: int | None = None, *, mandatory: bool = False, nullable: bool = True
) -> Property:
    return Property(name, EDM_STRING, nullable=nullable, max_length=max_length, mandatory=mandatory)


def _key(name: str, max_length: int) -> Property:
    return Property(name, EDM_STRING, nullable=False, max_length=max_length)


def _dec(name: str) -> Property:
    return Property(name, EDM_DECIMAL)


def _dt(name: str) -> Property:
    return Property(name, EDM_DATETIMEOFFSET)


def _enum(name: str, enum: EnumType) -> Property:
    return Property(name, EDM_ENUM, enum_type=enum)


DATA_AREA = _key("dataAreaId", 4)

CUSTOMERS = EntityType(
    name="CustomerV3",
    set_name="CustomersV3",
    keys=("dataAreaId", "CustomerAccount"),
    properties=(
        DATA_AREA,
        _key("CustomerAccount", 20),
        _s("OrganizationName", 100),
        _s("NameAlias", 20),
        _s("CustomerGroupId", 10, mandatory=True),
        _enum("CustomerType", CUSTOMER_TYPE),
        _s("SalesCurrencyCode", 3),
        _dec("CreditLimit"),
        _enum("CreditLimitIsMandatory", NO_YES),
        _enum("OnHoldStatus", CUST_VENDOR_BLOCKED),
        _s("PaymentTerms", 10),
        _s("DeliveryMode", 10),
        _s("InvoiceAccount", 20),
        _s("SalesTaxGroup", 10),
        _s("AddressDescription", 60),
        _s("AddressStreet", 250),
        _s("AddressCity", 60),
        _s("AddressState", 10),
        _s("AddressZipCode", 10),
        _s("AddressCountryRegionId", 10),
        _s("PrimaryContactEmail", 255),
        _s("PrimaryContactPhone", 255),
        _enum("PersonGender", GENDER),
        _s("LanguageId", 7),
        _dt("CreatedDateTime"),  # emulator sample: creation stamp (read-only in spirit, set on create)
        _dt("ModifiedDateTime"),  # emulator sample: lets clients test delta queries
    ),
)

VENDORS = EntityType(
    name="VendorV2",
    set_name="VendorsV2",
    keys=("dataAreaId", "VendorAccountNumber"),
    properties=(
        DATA_AREA,
        _key("VendorAccountNumber", 20),
        _s("VendorOrganizationName", 100),
        _s("VendorSearchName", 20),
        _s("VendorGroupId", 10, mandatory=True),
        _s("CurrencyCode", 3),
        _s("DefaultPaymentTermsName", 10),
        _enum("OnHoldStatus", CUST_VENDOR_BLOCKED),
        _enum("IsMinorityOwned", NO_YES),
        _s("AddressStreet", 250),
        _s("AddressCity", 60),
        _s("AddressZipCode", 10),
        _s("AddressCountryRegionId", 10),
        _s("PrimaryEmailAddress", 255),
        _s("PrimaryPhoneNumber", 255),
        _dt("CreatedDateTime"),
    ),
)

CUSTOMER_GROUPS = EntityType(
    name="CustomerGroup",
    set_name="CustomerGroups",
    keys=("dataAreaId", "CustomerGroupId"),
    properties=(
        DATA_AREA,
        _key("CustomerGroupId", 10),
        _s("Description", 60),
        _s("PaymentTermId", 10),
        _enum("IsSalesTaxIncludedInPrice", NO_YES),
        _s("TaxGroupId", 10),
    ),
)

RELEASED_PRODUCTS = EntityType(
    name="ReleasedProductV2",
    set_name="ReleasedProductsV2",
    keys=("dataAreaId", "ItemNumber"),
    properties=(
        DATA_AREA,
        _key("ItemNumber", 20),
        _s("ProductNumber", 20),
        _s("ProductName", 60),
        _s("SearchName", 20),
        _enum("ProductType", PRODUCT_TYPE),
        _s("ProductGroupId", 10),
        _s("ItemModelGroupId", 10),
        _s("InventoryUnitSymbol", 10),
        _s("SalesUnitSymbol", 10),
        _s("PurchaseUnitSymbol", 10),
        _dec("SalesPrice"),
        _dec("PurchasePrice"),
        _dec("NetProductWeight"),
        _enum("IsPurchasePriceAutomaticallyUpdated", NO_YES),
    ),
)

SALES_ORDER_HEADERS = EntityType(
    name="SalesOrderHeaderV2",
    set_name="SalesOrderHeadersV2",
    keys=("dataAreaId", "SalesOrderNumber"),
    properties=(
        DATA_AREA,
        _key("SalesOrderNumber", 20),
        _s("OrderingCustomerAccountNumber", 20, mandatory=True),
        _s("InvoiceCustomerAccountNumber", 20),
        _s("SalesOrderName", 100),
        _s("CurrencyCode", 3),
        _enum("SalesOrderStatus", SALES_STATUS),
        _enum("DocumentStatus", DOCUMENT_STATUS),
        _s("CustomersOrderReference", 60),
        _dt("RequestedShippingDate"),
        _dt("RequestedReceiptDate"),
        _s("DeliveryModeCode", 10),
        _s("PaymentTermsName", 10),
        _s("DeliveryAddressCity", 60),
        _s("DeliveryAddressCountryRegionId", 10),
        _dec("TotalDiscountPercentage"),
        _dt("OrderCreationDateTime"),
    ),
    navigations=(
        Navigation(
            "SalesOrderLines",
            "SalesOrderLines",
            collection=True,
            on=(("dataAreaId", "dataAreaId"), ("SalesOrderNumber", "SalesOrderNumber")),
        ),
        Navigation(
            "Customer",
            "CustomersV3",
            collection=False,
            on=(("dataAreaId", "dataAreaId"), ("OrderingCustomerAccountNumber", "CustomerAccount")),
        ),
    ),
)

SALES_ORDER_LINES = EntityType(
    name="SalesOrderLine",
    set_name="SalesOrderLines",
    keys=("dataAreaId", "InventoryLotId"),
    properties=(
        DATA_AREA,
        _key("InventoryLotId", 20),
        _s("SalesOrderNumber", 20, mandatory=True),
        _dec("LineNumber"),
        Property("LineCreationSequenceNumber", EDM_INT32),
        _s("ItemNumber", 20, mandatory=True),
        _s("LineDescription", 1000),
        _dec("OrderedSalesQuantity"),
        _s("SalesUnitSymbol", 10),
        _dec("SalesPrice"),
        _dec("LineDiscountAmount"),
        _dec("LineAmount"),
        _enum("SalesOrderLineStatus", SALES_STATUS),
        _dt("RequestedShippingDate"),
        _s("ShippingSiteId", 10),
        _s("ShippingWarehouseId", 10),
    ),
    navigations=(
        Navigation(
            "SalesOrderHeader",
            "SalesOrderHeadersV2",
            collection=False,
            on=(("dataAreaId", "dataAreaId"), ("SalesOrderNumber", "SalesOrderNumber")),
        ),
        Navigation(
            "ReleasedProduct",
            "ReleasedProductsV2",
            collection=False,
            on=(("dataAreaId", "dataAreaId"), ("ItemNumber", "ItemNumber")),
        ),
    ),
)

LEGAL_ENTITIES = EntityType(
    name="LegalEntity",
    set_name="LegalEntities",
    keys=("LegalEntityId",),
    company_specific=False,
    properties=(
        _key("LegalEntityId", 4),
        _s("Name", 100),
        _s("AddressStreet", 250),
        _s("AddressCity", 60),
        _s("AddressZipCode", 10),
        _s("AddressCountryRegionId", 10),
        _s("LanguageId", 7),
        _s("AccountingCurrency", 3),  # emulator sample: lives on the ledger in F&O
        Property("IsVirtual", EDM_BOOLEAN),  # emulator sample: a real Edm.Boolean for clients to meet
    ),
)

_INFOS = (
    EntityInfo(
        CUSTOMERS,
        "Customers V3",
        "CustCustomerV3Entity",
        references=(Reference("CustomerGroupId", "CustomerGroups", "CustomerGroupId", "Customer groups"),),
        stamps_created="CreatedDateTime",
        stamps_modified="ModifiedDateTime",
    ),
    EntityInfo(VENDORS, "Vendors V2", "VendVendorV2Entity", stamps_created="CreatedDateTime"),
    EntityInfo(CUSTOMER_GROUPS, "Customer groups", "CustCustomerGroupEntity"),
    EntityInfo(RELEASED_PRODUCTS, "Released products V2", "EcoResReleasedProductV2Entity"),
    EntityInfo(
        SALES_ORDER_HEADERS,
        "Sales order headers V2",
        "SalesOrderHeaderV2Entity",
        references=(
            Reference("OrderingCustomerAccountNumber", "CustomersV3", "CustomerAccount", "Customers"),
        ),
        stamps_created="OrderCreationDateTime",
    ),
    EntityInfo(
        SALES_ORDER_LINES,
        "Sales order lines V2",
        "SalesOrderLineV2Entity",
        references=(
            Reference(
                "SalesOrderNumber", "SalesOrderHeadersV2", "SalesOrderNumber", "Sales orders", cascade=True
            ),
            Reference("ItemNumber", "ReleasedProductsV2", "ItemNumber", "Released products"),
        ),
    ),
    EntityInfo(LEGAL_ENTITIES, "Legal entities", "OMLegalEntity"),
)


@dataclass
class EmulatorCatalog(Catalog):
    """The schema Catalog plus the write-time extras of each set."""

    infos: dict[str, EntityInfo] = field(default_factory=dict)

    def info(self, set_name: str) -> EntityInfo:
        return self.infos[set_name]


def build_catalog() -> EmulatorCatalog:
    """A fresh catalog of every set served under /data (callers may extend their own copy)."""
    catalog = EmulatorCatalog()
    for info in _INFOS:
        catalog.add(info.entity)
        catalog.infos[info.entity.set_name] = info
    return catalog
