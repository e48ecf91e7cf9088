"""The emulator's OData query compiler, checked by executing the compiled SQL against in-memory SQLite."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import pytest

from emulator.odata.query import (
    ExpandItem,
    ODataQueryError,
    compile_filter,
    compile_orderby,
    literal_to_storage,
    parse_count,
    parse_expand,
    parse_key_predicate,
    parse_select,
    parse_skip,
    parse_top,
)
from emulator.odata.schema import (
    EDM_BOOLEAN,
    EDM_DATE,
    EDM_DATETIMEOFFSET,
    EDM_DECIMAL,
    EDM_ENUM,
    EDM_GUID,
    EDM_INT32,
    EDM_INT64,
    EDM_STRING,
    Catalog,
    EntityType,
    EnumType,
    Navigation,
    Property,
)

NS = "Microsoft.Dynamics.DataEntities"
NO_YES = EnumType("NoYes", ("No", "Yes"))
BLOCKED = EnumType("CustVendorBlocked", ("No", "Invoice", "All"))
SALES_STATUS = EnumType("SalesStatus", ("None", "Backorder", "Delivered", "Invoiced"))

CUSTOMER = EntityType(
    name="CustomerV3",
    set_name="CustomersV3",
    keys=("dataAreaId", "CustomerAccount"),
    properties=(
        Property("dataAreaId", EDM_STRING, nullable=False),
        Property("CustomerAccount", EDM_STRING, nullable=False),
        Property("Name", EDM_STRING),
        Property("CreditLimit", EDM_DECIMAL),
        Property("Priority", EDM_INT32),
        Property("IsActive", EDM_BOOLEAN),
        Property("FoundedDate", EDM_DATE),
        Property("CreatedOn", EDM_DATETIMEOFFSET),
        Property("Blocked", EDM_ENUM, enum_type=BLOCKED),
        Property("Exempt", EDM_ENUM, enum_type=NO_YES),
        Property("PartyGuid", EDM_GUID),
    ),
)
HEADER = EntityType(
    name="SalesOrderHeader",
    set_name="SalesOrderHeaders",
    keys=("dataAreaId", "SalesOrderNumber"),
    properties=(
        Property("dataAreaId", EDM_STRING),
        Property("SalesOrderNumber", EDM_STRING),
        Property("CustomerAccount", EDM_STRING),
        Property("SalesOrderStatus", EDM_ENUM, enum_type=SALES_STATUS),
        Property("IsClosed", EDM_BOOLEAN),
    ),
    navigations=(
        Navigation(
            "SalesOrderLines",
            "SalesOrderLines",
            True,
            (("dataAreaId", "dataAreaId"), ("SalesOrderNumber", "SalesOrderNumber")),
        ),
        Navigation(
            "Customer",
            "CustomersV3",
            False,
            (("dataAreaId", "dataAreaId"), ("CustomerAccount", "CustomerAccount")),
        ),
    ),
)
LINE = EntityType(
    name="SalesOrderLine",
    set_name="SalesOrderLines",
    keys=("dataAreaId", "SalesOrderNumber", "LineNumber"),
    properties=(
        Property("dataAreaId", EDM_STRING),
        Property("SalesOrderNumber", EDM_STRING),
        Property("LineNumber", EDM_INT32),
        Property("ItemNumber", EDM_STRING),
        Property("Quantity", EDM_DECIMAL),
    ),
    navigations=(
        Navigation(
            "SalesOrderHeader",
            "SalesOrderHeaders",
            False,
            (("dataAreaId", "dataAreaId"), ("SalesOrderNumber", "SalesOrderNumber")),
        ),
    ),
)
LEGAL_ENTITY = EntityType(
    name="LegalEntity",
    set_name="LegalEntities",
    keys=("LegalEntityId",),
    properties=(Property("LegalEntityId", EDM_STRING), Property("Name", EDM_STRING)),
    company_specific=False,
)
LEAVE = EntityType(
    name="MyLeaveRequest",
    set_name="MyLeaveRequests",
    keys=("RequestId", "LeaveType", "LeaveDate", "dataAreaId"),
    properties=(
        Property("RequestId", EDM_STRING),
        Property("LeaveType", EDM_STRING),
        Property("LeaveDate", EDM_DATETIMEOFFSET),
        Property("dataAreaId", EDM_STRING),
    ),
)
RULE = EntityType(
    name="PriceRule",
    set_name="PriceRules",
    keys=("RuleId", "Enabled", "Tier", "Factor", "Active"),
    properties=(
        Property("RuleId", EDM_GUID),
        Property("Enabled", EDM_ENUM, enum_type=NO_YES),
        Property("Tier", EDM_INT64),
        Property("Factor", EDM_DECIMAL),
        Property("Active", EDM_BOOLEAN),
    ),
    company_specific=False,
)

CATALOG = Catalog()
for _entity in (CUSTOMER, HEADER, LINE, LEGAL_ENTITY, LEAVE, RULE):
    CATALOG.add(_entity)

GUID_1 = "0f8fad5b-d9cb-469f-a165-70867728950e"
GUID_3 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"

# (dataAreaId, account, Name, CreditLimit, Priority, IsActive, FoundedDate, CreatedOn, Blocked, Exempt, Guid)
CUSTOMERS: list[tuple[Any, ...]] = [
    (
        "usmf",
        "US-001",
        "Contoso Retail",
        1000,
        1,
        True,
        "2001-05-01",
        "2019-10-04T12:00:00Z",
        "No",
        "Yes",
        GUID_1,
    ),
    (
        "usmf",
        "US-002",
        "O'Brien Supplies",
        250.5,
        2,
        False,
        "1999-12-31",
        "2019-10-04T13:30:00Z",
        "Invoice",
        "No",
        None,
    ),
    (
        "usmf",
        "US-003",
        "50% Off Outlet",
        0,
        3,
        True,
        "2010-01-01",
        "2020-01-01T00:00:00Z",
        "All",
        "No",
        GUID_3,
    ),
    ("usrt", "US-004", "retail_world", 5000, 10, True, None, "2018-06-15T08:00:00Z", "No", "Yes", None),
    ("usrt", "US-005", "Outlet 500 Retail World", None, 5, False, None, None, "No", "No", None),
    ("usmf", "US-006", None, None, None, None, None, None, None, None, None),
]
HEADERS = [
    ("usmf", "SO-1", "US-001", "Backorder", False),
    ("usmf", "SO-2", "US-002", "Invoiced", True),
    ("usrt", "SO-3", "US-004", "Delivered", False),
]
LINES = [
    ("usmf", "SO-1", 1, "A", 2),
    ("usmf", "SO-1", 2, "B", 5),
    ("USMF", "SO-2", 1, "A", 1),  # company id in another case: joins must still match (D365 collation)
    ("usrt", "SO-3", 1, "C", 7),
    ("usmf", "SO-9", 1, "D", 9),  # orphan: no header
]
SQL_TYPES = {
    EDM_STRING: "TEXT",
    EDM_INT32: "INTEGER",
    EDM_INT64: "INTEGER",
    EDM_DECIMAL: "REAL",
    EDM_BOOLEAN: "INTEGER",
    EDM_DATE: "TEXT",
    EDM_DATETIMEOFFSET: "TEXT",
    EDM_GUID: "TEXT",
    EDM_ENUM: "TEXT",
}


def _create(db: sqlite3.Connection, entity: EntityType, rows: list[tuple[Any, ...]]) -> None:
    columns = ", ".join(f'"{p.name}" {SQL_TYPES[p.edm_type]}' for p in entity.properties)
    db.execute(f'CREATE TABLE "{entity.set_name}" ({columns})')
    for row in rows:
        values = [literal_to_storage(p, v) for p, v in zip(entity.properties, row, strict=True)]
        db.execute(f'INSERT INTO "{entity.set_name}" VALUES ({", ".join("?" * len(values))})', values)


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:")
    _create(conn, CUSTOMER, CUSTOMERS)
    _create(conn, HEADER, HEADERS)
    _create(conn, LINE, LINES)
    yield conn
    conn.close()


def customers(db: sqlite3.Connection, filter_text: str) -> list[str]:
    """Account numbers (without the US- prefix) the compiled filter selects."""
    frag = compile_filter(filter_text, CUSTOMER, CATALOG)
    sql = f'SELECT t."CustomerAccount" FROM "CustomersV3" AS t WHERE {frag.sql} ORDER BY 1'
    return [row[0].removeprefix("US-") for row in db.execute(sql, frag.params)]


def lines(db: sqlite3.Connection, filter_text: str) -> list[tuple[str, int]]:
    frag = compile_filter(filter_text, LINE, CATALOG)
    columns = 't."SalesOrderNumber", t."LineNumber"'
    sql = f'SELECT {columns} FROM "SalesOrderLines" AS t WHERE {frag.sql} ORDER BY 1, 2'
    return list(db.execute(sql, frag.params))


def headers(db: sqlite3.Connection, filter_text: str) -> list[str]:
    frag = compile_filter(filter_text, HEADER, CATALOG)
    sql = f'SELECT t."SalesOrderNumber" FROM "SalesOrderHeaders" AS t WHERE {frag.sql} ORDER BY 1'
    return [row[0] for row in db.execute(sql, frag.params)]


def reject(message: str) -> Any:
    return pytest.raises(ODataQueryError, match=re.escape(message))


# ------------------------------------------------------------------------------------------------- $filter


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        # strings: case-insensitive, '' escape, null-aware ne
        ("Name eq 'Contoso Retail'", ["001"]),
        ("Name eq 'CONTOSO retail'", ["001"]),
        ("Name eq 'O''Brien Supplies'", ["002"]),
        ("Name ne 'contoso retail'", ["002", "003", "004", "005", "006"]),
        ("Name eq null", ["006"]),
        ("Name ne null", ["001", "002", "003", "004", "005"]),
        ("Name lt 'd'", ["001", "003"]),  # binary collation would also pick 'O...' (uppercase < 'd')
        ("Name eq Name", ["001", "002", "003", "004", "005", "006"]),
        # the D365 wildcard
        ("Name eq '*retail*'", ["001", "004", "005"]),
        ("'*RETAIL*' eq Name", ["001", "004", "005"]),
        ("Name ne '*retail*'", ["002", "003", "006"]),
        ("Name eq 'contoso*'", ["001"]),
        ("Name eq '*WORLD'", ["004", "005"]),
        ("Name eq '*50%*'", ["003"]),  # '%' is literal: "Outlet 500" must not match
        ("Name eq '*l_w*'", ["004"]),  # '_' is literal: "Retail World" must not match
        ("Name eq '50%'", []),  # without '*' it is plain equality, '%' no wildcard
        ("Name gt '*'", ["001", "002", "003", "004", "005"]),  # '*' only means something with eq/ne
        # numbers
        ("CreditLimit gt 500", ["001", "004"]),
        ("CreditLimit ge 250.5", ["001", "002", "004"]),
        ("CreditLimit eq 250.5m", ["002"]),
        ("CreditLimit lt 1e3", ["002", "003"]),
        ("Priority le 2", ["001", "002"]),
        ("Priority gt -1 and Priority lt 2", ["001"]),
        ("Priority gt null", []),
        ("not (Priority gt null)", ["001", "002", "003", "004", "005", "006"]),
        # booleans
        ("IsActive eq true", ["001", "003", "004"]),
        ("IsActive eq false", ["002", "005"]),
        ("IsActive", ["001", "003", "004"]),
        ("not IsActive", ["002", "005"]),
        ("IsActive eq null", ["006"]),
        # dates and times (offsets normalised to UTC, fractions truncated)
        ("FoundedDate lt 2001-01-01", ["002"]),
        ("FoundedDate eq 2010-01-01", ["003"]),
        ("CreatedOn eq 2019-10-04T12:00:00Z", ["001"]),
        ("CreatedOn eq 2019-10-04T14:00:00+02:00", ["001"]),
        ("CreatedOn eq 2019-10-04T07:00-05:00", ["001"]),
        ("CreatedOn ge 2019-10-04T12:00:00.750Z", ["001", "002", "003"]),
        ("CreatedOn lt 2019-01-01T00:00:00Z", ["004"]),
        # guids (unquoted, any case)
        (f"PartyGuid eq {GUID_3.upper()}", ["003"]),
        (f"PartyGuid ne {GUID_1}", ["002", "003", "004", "005", "006"]),
        # enums
        (f"Blocked eq {NS}.CustVendorBlocked'Invoice'", ["002"]),
        (f"Blocked ne {NS}.CustVendorBlocked'No'", ["002", "003", "006"]),
        (f"Exempt eq {NS}.NoYes'Yes'", ["001", "004"]),
        (f"{NS}.NoYes'Yes' eq Exempt", ["001", "004"]),
        # company id is compared case-insensitively too
        ("dataAreaId eq 'USRT'", ["004", "005"]),
        # arithmetic
        ("Priority add 1 eq 3", ["002"]),
        ("Priority mul 2 gt 5", ["003", "004", "005"]),
        ("Priority sub 1 eq 0", ["001"]),
        ("Priority div 2 eq 1", ["002", "003"]),  # integer division truncates
        ("Priority divby 2 eq 1.5", ["003"]),  # decimal division
        ("Priority mod 3 eq 1", ["001", "004"]),
        ("CreditLimit mod 100 eq 50.5", ["002"]),  # SQLite's % would truncate 250.5 to 250
        ("CreditLimit div 2 eq 125.25", ["002"]),
        ("CreditLimit sub 0.5 eq 250", ["002"]),
        ("-Priority eq -3", ["003"]),
        ("Priority eq -(-3)", ["003"]),
        # precedence: mul > add > comparison > and > or; not binds tightest
        ("Priority add 2 mul 3 eq 7", ["001"]),
        ("(Priority add 2) mul 3 eq 12", ["002"]),
        ("IsActive eq false or Priority eq 3 and dataAreaId eq 'usrt'", ["002", "005"]),
        ("(IsActive eq false or Priority eq 3) and dataAreaId eq 'usrt'", ["005"]),
        ("not IsActive eq false", ["001", "003", "004"]),  # (not IsActive) eq false
        ("not (IsActive eq false)", ["001", "003", "004", "006"]),
        ("not (Priority eq 1) and IsActive", ["003", "004"]),
        ("((((Priority eq 1))))", ["001"]),
    ],
)
def test_filter_selects_expected_rows(db: sqlite3.Connection, filter_text: str, expected: list[str]) -> None:
    assert customers(db, filter_text) == expected


def test_filter_values_are_parameters_never_sql_text(db: sqlite3.Connection) -> None:
    hostile = "x'' OR 1=1; DROP TABLE \"CustomersV3\"; --"
    frag = compile_filter(f"Name eq '{hostile}' or Priority eq 42", CUSTOMER, CATALOG)
    assert "DROP" not in frag.sql
    assert "42" not in frag.sql
    assert frag.params == ['x\' OR 1=1; DROP TABLE "CustomersV3"; --', 42]
    assert customers(db, f"Name eq '{hostile}'") == []
    assert db.execute('SELECT COUNT(*) FROM "CustomersV3"').fetchone() == (6,)


def test_filter_fragment_is_parenthesised_and_uses_alias() -> None:
    frag = compile_filter("Priority eq 1 or Priority eq 2", CUSTOMER, CATALOG, alias="c")
    assert frag.sql == '((c."Priority" IS ?) OR (c."Priority" IS ?))'
    assert frag.params == [1, 2]
    frag = compile_filter("Name eq '*a_b%*'", CUSTOMER, CATALOG)
    assert frag.sql == "(t.\"Name\" LIKE ? ESCAPE '\\')"
    assert frag.params == ["%a\\_b\\%%"]
    with pytest.raises(ValueError, match="alias"):
        compile_filter("Priority eq 1", CUSTOMER, CATALOG, alias='t"; --')


def test_enum_and_datetime_literals_become_storage_values() -> None:
    frag = compile_filter(
        f"Exempt eq {NS}.NoYes'Yes' and CreatedOn gt 2019-10-04T23:30:00.9-01:00 "
        "and FoundedDate eq 2019-02-01",
        CUSTOMER,
        CATALOG,
    )
    assert frag.params == ["Yes", "2019-10-05T00:30:00Z", "2019-02-01"]


@pytest.mark.parametrize(
    ("filter_text", "expected"),
    [
        (f"SalesOrderHeader/SalesOrderStatus eq {NS}.SalesStatus'Invoiced'", [("SO-2", 1)]),
        ("SalesOrderHeader/IsClosed eq false", [("SO-1", 1), ("SO-1", 2), ("SO-3", 1)]),
        ("SalesOrderHeader/IsClosed", [("SO-2", 1)]),
        ("SalesOrderHeader/CustomerAccount eq 'us-004' or Quantity eq 9", [("SO-3", 1), ("SO-9", 1)]),
        (
            "SalesOrderHeader/SalesOrderNumber ne null and Quantity gt 1",
            [("SO-1", 1), ("SO-1", 2), ("SO-3", 1)],
        ),
        # an orphan line has no header: every comparison through the navigation is false for it
        ("not (SalesOrderHeader/IsClosed eq true)", [("SO-1", 1), ("SO-1", 2), ("SO-3", 1), ("SO-9", 1)]),
        (
            "SalesOrderHeader/SalesOrderNumber eq SalesOrderNumber",
            [("SO-1", 1), ("SO-1", 2), ("SO-2", 1), ("SO-3", 1)],
        ),
    ],
)
def test_navigation_filter_runs_as_exists_subquery(
    db: sqlite3.Connection, filter_text: str, expected: list[tuple[str, int]]
) -> None:
    assert lines(db, filter_text) == expected


def test_navigation_filter_sql_shape(db: sqlite3.Connection) -> None:
    frag = compile_filter(f"SalesOrderHeader/SalesOrderStatus eq {NS}.SalesStatus'Invoiced'", LINE, CATALOG)
    assert frag.sql.startswith('(EXISTS (SELECT 1 FROM "SalesOrderHeaders" AS t_n0 WHERE ')
    assert 't_n0."dataAreaId" = t."dataAreaId" COLLATE NOCASE' in frag.sql
    assert frag.params == ["Invoiced"]
    # single-valued navigation to another set, with the wildcard
    assert headers(db, "Customer/Name eq '*retail*'") == ["SO-1", "SO-3"]


@pytest.mark.parametrize(
    ("entity", "filter_text", "message"),
    [
        (CUSTOMER, "Name eq", "Expression expected at position 7 in 'Name eq'."),
        (CUSTOMER, "", "Expression expected at position 0 in ''."),
        (
            CUSTOMER,
            "Name eq 'abc",
            "There is an unterminated string literal at position 8 in 'Name eq 'abc'.",
        ),
        (CUSTOMER, "Name eq 'a' Priority", "Syntax error at position 12 in 'Name eq 'a' Priority'."),
        (CUSTOMER, "Name like 'a'", "Syntax error at position 5 in 'Name like 'a''."),
        (CUSTOMER, "(Name eq 'a'", "')' or operator expected at position 12 in '(Name eq 'a''."),
        (CUSTOMER, "Name # 'a'", "Syntax error: character '#' is not valid at position 5 in 'Name # 'a''."),
        (CUSTOMER, "eq eq 1", "Expression expected at position 0 in 'eq eq 1'."),
        (CUSTOMER, "Nope eq 1", f"Could not find a property named 'Nope' on type '{NS}.CustomerV3'."),
        (CUSTOMER, "name eq 'x'", f"Could not find a property named 'name' on type '{NS}.CustomerV3'."),
        (
            CUSTOMER,
            "Name eq 1",
            "A binary operator with incompatible types was detected. "
            "Found operand types 'Edm.String' and 'Edm.Int32' for operator kind 'Equal'.",
        ),
        (CUSTOMER, "Priority gt '1'", "'Edm.Int32' and 'Edm.String' for operator kind 'GreaterThan'."),
        (CUSTOMER, "IsActive eq 1", "'Edm.Boolean' and 'Edm.Int32' for operator kind 'Equal'."),
        (
            CUSTOMER,
            "CreatedOn eq 2019-10-04",
            "'Edm.DateTimeOffset' and 'Edm.Date' for operator kind 'Equal'.",
        ),
        (CUSTOMER, f"PartyGuid eq '{GUID_1}'", "'Edm.Guid' and 'Edm.String' for operator kind 'Equal'."),
        (CUSTOMER, "Name add 1 eq 2", "'Edm.String' and 'Edm.Int32' for operator kind 'Add'."),
        (CUSTOMER, "Priority eq 1 and Name", "'Edm.Boolean' and 'Edm.String' for operator kind 'And'."),
        (
            CUSTOMER,
            "not Name",
            "A unary operator with an incompatible type was detected. "
            "Found operand type 'Edm.String' for operator kind 'Not'.",
        ),
        (CUSTOMER, "not Name eq 'x'", "Found operand type 'Edm.String' for operator kind 'Not'."),
        (CUSTOMER, "-Name eq 'x'", "Found operand type 'Edm.String' for operator kind 'Negate'."),
        (CUSTOMER, "Name", "The $filter expression must evaluate to a single boolean value."),
        (CUSTOMER, "Priority add 1", "The $filter expression must evaluate to a single boolean value."),
        # enums (ref §1.3)
        (CUSTOMER, "Blocked eq 'No'", f"Found operand types '{NS}.CustVendorBlocked' and 'Edm.String'"),
        (
            CUSTOMER,
            f"Blocked gt {NS}.CustVendorBlocked'No'",
            "Only the 'eq' and 'ne' operators are supported",
        ),
        (CUSTOMER, f"Blocked le {NS}.CustVendorBlocked'No'", "for enum values; found 'le'."),
        (CUSTOMER, f"Exempt eq {NS}.CustVendorBlocked'No'", f"'{NS}.NoYes' and '{NS}.CustVendorBlocked'"),
        (CUSTOMER, "Exempt eq NoYes'Yes'", f"must be qualified with the namespace: {NS}.NoYes'Yes'."),
        (
            CUSTOMER,
            "Exempt eq Other.Space.NoYes'Yes'",
            "The type 'Other.Space.NoYes' is not a known enum type.",
        ),
        (
            CUSTOMER,
            f"Exempt eq {NS}.NoYes'Maybe'",
            "The string 'Maybe' is not a valid enumeration type constant",
        ),
        (CUSTOMER, f"Exempt eq {NS}.NoYes'yes'", "The string 'yes' is not a valid enumeration type constant"),
        # operators and functions F&O does not support (ref §1.3)
        (CUSTOMER, f"Blocked has {NS}.CustVendorBlocked'No'", "The query operator 'has' is not supported."),
        (CUSTOMER, "Name in ('a','b')", "The query operator 'in' is not supported."),
        (
            CUSTOMER,
            "contains(Name,'x')",
            "The query function 'contains' is not supported; use Field eq '*value*'.",
        ),
        (
            CUSTOMER,
            "startswith(Name, 'x')",
            "The query function 'startswith' is not supported; use Field eq 'value*'.",
        ),
        (
            CUSTOMER,
            "endswith(Name,'x')",
            "The query function 'endswith' is not supported; use Field eq '*value'.",
        ),
        (
            CUSTOMER,
            "tolower(Name) eq 'x'",
            "'tolower' is not supported; string comparisons are already case-insensitive",
        ),
        (CUSTOMER, "year(CreatedOn) eq 2019", "The query function 'year' is not supported."),
        (CUSTOMER, "frob(Name)", "An unknown function with name 'frob' was found."),
        # bad literals
        (
            CUSTOMER,
            "CreatedOn eq 2019-13-01T00:00:00Z",
            "Unrecognized 'Edm.DateTimeOffset' literal '2019-13-01T00:00:00Z'",
        ),
        (CUSTOMER, "FoundedDate eq 2019-02-30", "Unrecognized 'Edm.Date' literal '2019-02-30' at '15'"),
        # navigation paths
        (
            CUSTOMER,
            "Name/Length eq 1",
            f"The property 'Name' on type '{NS}.CustomerV3' is not a navigation property",
        ),
        (
            LINE,
            "SalesOrderHeader/Nope eq 1",
            f"Could not find a property named 'Nope' on type '{NS}.SalesOrderHeader'.",
        ),
        (
            LINE,
            "SalesOrderHeader eq null",
            "The navigation property 'SalesOrderHeader' cannot be used as a value",
        ),
        (LINE, "SalesOrderHeader/Customer/Name eq 'x'", "$filter allows one level of navigation"),
        (HEADER, "SalesOrderLines/Quantity gt 1", "Property access can only be applied to a single value."),
        (HEADER, "SalesOrderLines/any(l: l/Quantity gt 1)", "The lambda operator 'any' is not supported."),
    ],
)
def test_filter_rejections(entity: EntityType, filter_text: str, message: str) -> None:
    with reject(message) as info:
        compile_filter(filter_text, entity, CATALOG)
    assert info.value.message == str(info.value)


def test_navigation_to_unserved_set_is_a_query_error() -> None:
    lonely = EntityType(
        "Lonely",
        "Lonelies",
        ("Id",),
        (Property("Id", EDM_STRING),),
        (Navigation("Ghost", "Ghosts", False, ()),),
    )
    with reject("targets the entity set 'Ghosts', which is not served"):
        compile_filter("Ghost/Id eq 'x'", lonely, CATALOG)


# ------------------------------------------------------------------------------------------------ $orderby


def test_orderby_sql() -> None:
    assert (
        compile_orderby("Name desc, Priority", CUSTOMER) == 't."Name" COLLATE NOCASE DESC, t."Priority" ASC'
    )
    assert compile_orderby(" CreatedOn  asc ", CUSTOMER, alias="c") == 'c."CreatedOn" ASC'


def test_orderby_executes_with_nocase_and_enum_value_order(db: sqlite3.Connection) -> None:
    def order(text: str) -> list[str]:
        sql = f'SELECT t."CustomerAccount" FROM "CustomersV3" AS t ORDER BY {compile_orderby(text, CUSTOMER)}'
        return [row[0].removeprefix("US-") for row in db.execute(sql)]

    # enum order is the member (value) order All > Invoice > No, not alphabetical; null sorts lowest.
    assert order("Blocked desc, CustomerAccount") == ["003", "002", "001", "004", "005", "006"]
    assert order("Name, CustomerAccount") == ["006", "003", "001", "002", "005", "004"]
    db.execute("""INSERT INTO "CustomersV3" ("CustomerAccount", "Name") VALUES ('US-zzz', 'aardvark')""")
    try:  # binary collation would sort 'aardvark' after every capitalised name
        assert order("Name, CustomerAccount") == ["006", "003", "zzz", "001", "002", "005", "004"]
    finally:
        db.execute("""DELETE FROM "CustomersV3" WHERE "CustomerAccount" = 'US-zzz'""")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Nope", f"Could not find a property named 'Nope' on type '{NS}.CustomerV3'."),
        ("Name sideways", "Syntax error at position 5 in 'Name sideways'."),
        ("Name,", "Expression expected at position 5 in 'Name,'."),
        ("", "Expression expected at position 0 in ''."),
        ("tolower(Name)", "The query function 'tolower' is not supported"),
        ("Name; drop", "Syntax error: character ';' is not valid at position 4"),
    ],
)
def test_orderby_rejections(text: str, message: str) -> None:
    with reject(message):
        compile_orderby(text, CUSTOMER)


def test_orderby_rejects_navigation() -> None:
    with reject("The navigation property 'SalesOrderLines' cannot be used in $orderby."):
        compile_orderby("SalesOrderLines", HEADER)
    with reject("Ordering by a navigation path is not supported"):
        compile_orderby("Customer/Name", HEADER)


# ------------------------------------------------------------------------------------------------- $select


def test_select() -> None:
    assert parse_select("Name, CustomerAccount,Name", CUSTOMER) == ["Name", "CustomerAccount"]
    assert parse_select("*", LEGAL_ENTITY) == ["LegalEntityId", "Name"]
    assert parse_select("Name,*", LEGAL_ENTITY) == ["Name", "LegalEntityId"]


@pytest.mark.parametrize(
    ("entity", "text", "message"),
    [
        (CUSTOMER, "Name,Nope", f"Could not find a property named 'Nope' on type '{NS}.CustomerV3'."),
        (CUSTOMER, "Name,", "Syntax error at position 5 in 'Name,'."),
        (CUSTOMER, "", "Syntax error at position 0 in ''."),
        (CUSTOMER, "Name eq", "Syntax error at position 0 in 'Name eq'."),
        (HEADER, "Customer", "The navigation property 'Customer' cannot be selected; use $expand=Customer"),
        (HEADER, "Customer/Name", "with $expand=Customer($select=...)."),
    ],
)
def test_select_rejections(entity: EntityType, text: str, message: str) -> None:
    with reject(message):
        parse_select(text, entity)


# ------------------------------------------------------------------------------------------------- $expand


def test_expand() -> None:
    lines_nav, customer_nav = HEADER.navigations
    assert parse_expand("SalesOrderLines", HEADER, CATALOG) == [ExpandItem(lines_nav, None)]
    assert parse_expand(" SalesOrderLines , Customer($select=Name, CustomerAccount)", HEADER, CATALOG) == [
        ExpandItem(lines_nav, None),
        ExpandItem(customer_nav, ["Name", "CustomerAccount"]),
    ]
    assert parse_expand("*", HEADER, CATALOG) == [ExpandItem(lines_nav, None), ExpandItem(customer_nav, None)]
    assert parse_expand("SalesOrderHeader($select=*)", LINE, CATALOG)[0].select == [
        p.name for p in HEADER.properties
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SalesOrderLines/SalesOrderHeader", "Only first-level expansion is supported"),
        ("SalesOrderLines($expand=SalesOrderHeader)", "'SalesOrderLines' cannot itself contain $expand"),
        ("SalesOrderLines($select=ItemNumber;$expand=SalesOrderHeader)", "Only first-level expansion"),
        (
            "SalesOrderLines($filter=Quantity gt 1)",
            "The query option '$filter' is not supported inside $expand",
        ),
        (
            "SalesOrderLines($top=1)",
            "The query option '$top' is not supported inside $expand; only $select is.",
        ),
        ("SalesOrderLines($bogus=1)", "'$bogus' is not a valid query option inside $expand."),
        (
            "SalesOrderLines($select=Nope)",
            f"Could not find a property named 'Nope' on type '{NS}.SalesOrderLine'.",
        ),
        ("Customer($select=Name;$select=Name)", "$select is specified more than once"),
        ("Nope", f"Could not find a property named 'Nope' on type '{NS}.SalesOrderHeader'."),
        ("SalesOrderNumber", "Property 'SalesOrderNumber' on type"),
        ("Customer,Customer", "The navigation property 'Customer' is expanded more than once."),
        ("Customer(", "Syntax error at position 9 in 'Customer('."),
        ("Customer()", "Syntax error at position 9 in 'Customer()'."),
        ("Customer)", "Syntax error at position 8 in 'Customer)'."),
        ("Customer,", "Syntax error at position 9 in 'Customer,'."),
    ],
)
def test_expand_rejections(text: str, message: str) -> None:
    with reject(message):
        parse_expand(text, HEADER, CATALOG)


# ----------------------------------------------------------------------------------- $top, $skip, $count


@pytest.mark.parametrize("parse", [parse_top, parse_skip])
def test_top_and_skip(parse: Any) -> None:
    assert parse(None) is None
    assert parse("0") == 0
    assert parse("10000") == 10000
    option = "$top" if parse is parse_top else "$skip"
    for bad in ("-1", "1.5", "abc", "", " 5", "+5", "99999999999999999999"):
        with reject(f"Invalid value '{bad}' for {option} query option found."):
            parse(bad)


def test_count() -> None:
    assert parse_count(None) is False
    assert parse_count("true") is True
    assert parse_count("TRUE") is True
    assert parse_count("False") is False
    with reject("'yes' is not a valid count option."):
        parse_count("yes")


# ---------------------------------------------------------------------------------------- key predicates


@pytest.mark.parametrize(
    ("entity", "text", "expected"),
    [
        (
            CUSTOMER,
            "dataAreaId='usmf',CustomerAccount='US-001'",
            {"dataAreaId": "usmf", "CustomerAccount": "US-001"},
        ),
        (
            CUSTOMER,
            "CustomerAccount='US-001', dataAreaId='usmf'",
            {"dataAreaId": "usmf", "CustomerAccount": "US-001"},
        ),
        (
            CUSTOMER,
            "dataAreaId='usmf',CustomerAccount='O''Brien'",
            {"dataAreaId": "usmf", "CustomerAccount": "O'Brien"},
        ),
        (
            CUSTOMER,
            "dataAreaId=%27usmf%27,CustomerAccount=%27A%2CB%27",
            {"dataAreaId": "usmf", "CustomerAccount": "A,B"},
        ),
        (
            CUSTOMER,
            "dataAreaId='usmf',CustomerAccount='O%27%27Brien'",
            {"dataAreaId": "usmf", "CustomerAccount": "O'Brien"},
        ),
        (LEGAL_ENTITY, "'USMF'", {"LegalEntityId": "USMF"}),
        (LEGAL_ENTITY, "%27USMF%27", {"LegalEntityId": "USMF"}),
        (LEGAL_ENTITY, "LegalEntityId='USMF'", {"LegalEntityId": "USMF"}),
        (
            LEAVE,  # the shape of ref §1.1's Microsoft example, incl. the unquoted DateTimeOffset
            "RequestId='USMF-000065', LeaveType='Vacation', LeaveDate=2019-10-04T12:00:00Z, "
            "dataAreaId='USMF'",
            {
                "RequestId": "USMF-000065",
                "LeaveType": "Vacation",
                "LeaveDate": "2019-10-04T12:00:00Z",
                "dataAreaId": "USMF",
            },
        ),
        (
            LEAVE,
            "LeaveDate=2019-10-04T14:00:00.5%2B02:00,RequestId='r',LeaveType='t',dataAreaId='d'",
            {"RequestId": "r", "LeaveType": "t", "LeaveDate": "2019-10-04T12:00:00Z", "dataAreaId": "d"},
        ),
        (
            RULE,
            f"RuleId={GUID_1.upper()},Enabled={NS}.NoYes'Yes',Tier=-5,Factor=1.25,Active=true",
            {"RuleId": GUID_1, "Enabled": "Yes", "Tier": -5, "Factor": 1.25, "Active": 1},
        ),
        (
            RULE,  # a quoted symbol for an enum key part (UNCONFIRMED, accepted)
            f"RuleId={GUID_1},Enabled='No',Tier=7,Factor=2,Active=false",
            {"RuleId": GUID_1, "Enabled": "No", "Tier": 7, "Factor": 2.0, "Active": 0},
        ),
    ],
)
def test_key_predicate(entity: EntityType, text: str, expected: dict[str, Any]) -> None:
    result = parse_key_predicate(text, entity)
    assert result == expected
    assert list(result) == list(entity.keys)  # always in key order, whatever order the URL used


@pytest.mark.parametrize(
    ("entity", "text", "message"),
    [
        (
            CUSTOMER,
            "'US-001'",
            "does not match number of key properties for the resource 'Microsoft.Dynamics",
        ),
        (
            CUSTOMER,
            "dataAreaId='usmf'",
            "does not match number of key properties for the resource 'Microsoft.Dynamics",
        ),
        (CUSTOMER, "dataAreaId='usmf'", "Missing: CustomerAccount."),
        (CUSTOMER, "", "does not match number of key properties"),
        (CUSTOMER, "dataAreaId='usmf',CustomerAccount='x',Name='y'", "'Name' is not a key property of type"),
        (CUSTOMER, "dataareaid='usmf',CustomerAccount='x'", "'dataareaid' is not a key property"),
        (
            CUSTOMER,
            "dataAreaId='a',dataAreaId='b',CustomerAccount='x'",
            "The key property 'dataAreaId' is specified more",
        ),
        (CUSTOMER, "dataAreaId=usmf,CustomerAccount='x'", "Syntax error at position 11 in 'dataAreaId=usmf,"),
        (CUSTOMER, "dataAreaId='usmf' CustomerAccount='x'", "Syntax error at position 18"),
        (CUSTOMER, "dataAreaId='usmf',CustomerAccount='x", "unterminated string literal at position 34"),
        (
            CUSTOMER,
            "CustomerAccount=1,dataAreaId='usmf'",
            "The key value '1' is not a valid 'Edm.String' literal",
        ),
        (LEGAL_ENTITY, "'a' 'b'", "Syntax error at position 4 in ''a' 'b''."),
        (LEGAL_ENTITY, "USMF", "Syntax error at position 0 in 'USMF'."),
        (LEGAL_ENTITY, "null", "Syntax error at position 0 in 'null'."),
        (
            LEAVE,
            "RequestId='r',LeaveType='t',LeaveDate='2019-10-04T12:00:00Z',dataAreaId='d'",
            "'Edm.DateTimeOffset'",
        ),
        (
            RULE,
            f"RuleId='{GUID_1}',Enabled='No',Tier=7,Factor=2,Active=false",
            "not a valid 'Edm.Guid' literal",
        ),
        (
            RULE,
            f"RuleId={GUID_1},Enabled='No',Tier=1.5,Factor=2,Active=false",
            "not a valid 'Edm.Int64' literal",
        ),
        (RULE, f"RuleId={GUID_1},Enabled='No',Tier=1,Factor=2,Active=1", "not a valid 'Edm.Boolean' literal"),
        (
            RULE,
            f"RuleId={GUID_1},Enabled='Maybe',Tier=1,Factor=2,Active=true",
            "Cannot convert the literal 'Maybe'",
        ),
        (
            RULE,
            f"RuleId={GUID_1},Enabled={NS}.NoYes'Maybe',Tier=1,Factor=2,Active=true",
            "'Maybe' is not a valid enum",
        ),
        (
            RULE,
            f"RuleId={GUID_1},Enabled={NS}.Gender'No',Tier=1,Factor=2,Active=true",
            "not a valid 'Microsoft.Dyn",
        ),
    ],
)
def test_key_predicate_rejections(entity: EntityType, text: str, message: str) -> None:
    with reject(message):
        parse_key_predicate(text, entity)


# ------------------------------------------------------------------------------------ literal_to_storage


def _prop(edm: str, enum: EnumType | None = None) -> Property:
    return Property("P", edm, enum_type=enum)


@pytest.mark.parametrize(
    ("prop", "value", "stored"),
    [
        (_prop(EDM_STRING), "x", "x"),
        (_prop(EDM_STRING), None, None),
        (_prop(EDM_INT32), 5, 5),
        (_prop(EDM_INT32), 5.0, 5),
        (_prop(EDM_INT64), 2**40, 2**40),
        (_prop(EDM_DECIMAL), 3, 3.0),
        (_prop(EDM_DECIMAL), Decimal("2.5"), 2.5),
        (_prop(EDM_DECIMAL), "12.75", 12.75),
        (_prop(EDM_BOOLEAN), True, 1),
        (_prop(EDM_BOOLEAN), False, 0),
        (_prop(EDM_DATE), "2024-02-29", "2024-02-29"),
        (_prop(EDM_DATE), date(2024, 2, 29), "2024-02-29"),
        (_prop(EDM_DATETIMEOFFSET), "2026-04-14T21:43:44Z", "2026-04-14T21:43:44Z"),
        (_prop(EDM_DATETIMEOFFSET), "2026-04-14T23:43:44.1234567+02:00", "2026-04-14T21:43:44Z"),
        (
            _prop(EDM_DATETIMEOFFSET),
            datetime(2026, 4, 14, 21, 43, 44, 999, tzinfo=UTC),
            "2026-04-14T21:43:44Z",
        ),
        (
            _prop(EDM_DATETIMEOFFSET),
            datetime(2026, 4, 14, 16, 43, 44, tzinfo=timezone(timedelta(hours=-5))),
            "2026-04-14T21:43:44Z",
        ),
        (_prop(EDM_GUID), GUID_1.upper(), GUID_1),
        (_prop(EDM_GUID), UUID(GUID_3), GUID_3),
        (_prop(EDM_ENUM, NO_YES), "Yes", "Yes"),
    ],
)
def test_literal_to_storage(prop: Property, value: Any, stored: Any) -> None:
    assert literal_to_storage(prop, value) == stored


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        (_prop(EDM_STRING), 5),
        (_prop(EDM_INT32), True),
        (_prop(EDM_INT32), 1.5),
        (_prop(EDM_INT32), 2**31),
        (_prop(EDM_INT32), "5"),
        (_prop(EDM_DECIMAL), False),
        (_prop(EDM_DECIMAL), "abc"),
        (_prop(EDM_DECIMAL), float("nan")),
        (_prop(EDM_BOOLEAN), 1),
        (_prop(EDM_BOOLEAN), "true"),
        (_prop(EDM_DATE), "2023-02-29"),
        (_prop(EDM_DATE), datetime(2024, 1, 1, tzinfo=UTC)),
        (_prop(EDM_DATETIMEOFFSET), "2026-04-14T21:43:44"),  # no offset
        (_prop(EDM_DATETIMEOFFSET), "2026-04-14"),
        (_prop(EDM_DATETIMEOFFSET), datetime(2026, 4, 14)),  # naive
        (_prop(EDM_GUID), "not-a-guid"),
        (_prop(EDM_ENUM, NO_YES), "yes"),
        (_prop(EDM_ENUM, NO_YES), 1),
    ],
)
def test_literal_to_storage_rejections(prop: Property, value: Any) -> None:
    with reject(
        f"to the expected type '{prop.enum_type.qualified_name if prop.enum_type else prop.edm_type}'"
    ):
        literal_to_storage(prop, value)
