"""Pure URL building: literals, keys, the filter builder and query options (ref §1.1-1.3)."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from urllib.parse import unquote

import pytest

from shared.d365.errors import ODataQueryError
from shared.d365.odata_query import (
    Enum,
    F,
    Query,
    action_path,
    encode_query,
    entity_path,
    format_key,
    format_literal,
    raw,
)

# ---------------------------------------------------------------------------------------------- literals


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("US-001", "'US-001'"),
        ("O'Brien", "'O''Brien'"),
        ("''", "''''''"),
        ("", "''"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (42, "42"),
        (-7, "-7"),
        (1.5, "1.5"),
        (Decimal("1234.50"), "1234.50"),
        (Decimal("1E+2"), "100"),
        (date(2019, 10, 4), "2019-10-04"),
        (datetime(2019, 10, 4, 12, 0, tzinfo=UTC), "2019-10-04T12:00:00Z"),
        (datetime(2019, 10, 4, 14, 0, tzinfo=timezone(timedelta(hours=2))), "2019-10-04T12:00:00Z"),
        (datetime(2019, 10, 4, 12, 0, 0, 120000, tzinfo=UTC), "2019-10-04T12:00:00.12Z"),
        (uuid.UUID("8d9b0f3c-0000-4000-8000-000000000001"), "8d9b0f3c-0000-4000-8000-000000000001"),
        (Enum("NoYes", "Yes"), "Microsoft.Dynamics.DataEntities.NoYes'Yes'"),
        (
            Enum("Microsoft.Dynamics.DataEntities.Gender", "Unknown"),
            "Microsoft.Dynamics.DataEntities.Gender'Unknown'",
        ),
    ],
)
def test_format_literal(value: object, expected: str) -> None:
    assert format_literal(value) == expected


def test_naive_datetime_is_rejected_with_a_hint() -> None:
    with pytest.raises(ODataQueryError, match=r"naive datetime .* timezone"):
        format_literal(datetime(2019, 10, 4, 12, 0))


@pytest.mark.parametrize(
    "value", [b"bytes", object(), [1, 2], {"a": 1}, float("nan"), float("inf"), Decimal("NaN")]
)
def test_unsupported_literals_are_rejected(value: object) -> None:
    with pytest.raises(ODataQueryError):
        format_literal(value)


@pytest.mark.parametrize(
    ("enum_type", "member"), [("No Yes", "Yes"), ("NoYes", "Ye's"), ("", "Yes"), ("NoYes", "")]
)
def test_enum_names_are_validated(enum_type: str, member: str) -> None:
    with pytest.raises(ODataQueryError, match="invalid enum"):
        Enum(enum_type, member)


# ---------------------------------------------------------------------------------------------- keys


def test_composite_key_keeps_order_and_quotes() -> None:
    key = format_key({"dataAreaId": "usmf", "CustomerAccount": "US-001"})
    assert key == "(dataAreaId='usmf',CustomerAccount='US-001')"


def test_single_key() -> None:
    assert format_key("USMF") == "('USMF')"
    assert format_key(5637144576) == "(5637144576)"


def test_key_with_datetime_and_enum_parts() -> None:
    key = format_key(
        {
            "RequestId": "USMF-000065",
            "LeaveDate": datetime(2019, 10, 4, 12, tzinfo=UTC),
            "Kind": Enum("NoYes", "No"),
        }
    )
    assert unquote(key) == (
        "(RequestId='USMF-000065',LeaveDate=2019-10-04T12:00:00Z,Kind=Microsoft.Dynamics.DataEntities.NoYes'No')"
    )


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("A B", "'A%20B'"),
        ("a/b", "'a%2Fb'"),
        ("a#b", "'a%23b'"),
        ("a?b", "'a%3Fb'"),
        ("100%", "'100%25'"),
        ("a+b", "'a%2Bb'"),
        ("a&b", "'a%26b'"),
        ("O'Brien", "'O''Brien'"),
        ("Zoë", "'Zo%C3%AB'"),
    ],
)
def test_awkward_key_values_are_percent_encoded_for_a_path(value: str, encoded: str) -> None:
    key = format_key({"dataAreaId": "usmf", "CustomerAccount": value})
    assert key == f"(dataAreaId='usmf',CustomerAccount={encoded})"
    for char in " /#?+&":
        assert char not in key
    assert unquote(key) == f"(dataAreaId='usmf',CustomerAccount={format_literal(value)})"


@pytest.mark.parametrize("key", [{}, None, ""])
def test_empty_key_is_rejected(key: object) -> None:
    with pytest.raises(ODataQueryError, match="empty entity key"):
        format_key(key)


def test_null_key_part_and_bad_field_name_are_rejected() -> None:
    with pytest.raises(ODataQueryError, match="cannot be null"):
        format_key({"dataAreaId": "usmf", "CustomerAccount": None})
    with pytest.raises(ODataQueryError, match="invalid key field name"):
        format_key({"data AreaId": "usmf"})


def test_entity_and_action_paths() -> None:
    assert entity_path("CustomersV3") == "/data/CustomersV3"
    assert entity_path("LegalEntities", "USMF") == "/data/LegalEntities('USMF')"
    assert action_path("DataManagementDefinitionGroups", "GetAzureWriteUrl") == (
        "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetAzureWriteUrl"
    )
    assert action_path("MyLeaveRequests", "Microsoft.Dynamics.DataEntities.submit", {"RequestId": "R1"}) == (
        "/data/MyLeaveRequests(RequestId='R1')/Microsoft.Dynamics.DataEntities.submit"
    )
    with pytest.raises(ODataQueryError, match="entity set name"):
        entity_path("Customers V3")
    with pytest.raises(ODataQueryError, match="action name"):
        action_path("CustomersV3", "do/this")


# ---------------------------------------------------------------------------------------------- filters


def test_comparisons() -> None:
    assert str(F("CustomerGroupId") == "10") == "CustomerGroupId eq '10'"
    assert str(F("CustomerGroupId") != "10") == "CustomerGroupId ne '10'"
    assert str(F("CreditLimit") > 100) == "CreditLimit gt 100"
    assert str(F("CreditLimit") >= Decimal("100.5")) == "CreditLimit ge 100.5"
    assert str(F("CreditLimit") < 1) == "CreditLimit lt 1"
    assert str(F("CreditLimit") <= 1) == "CreditLimit le 1"
    assert str(F("Name") == "O'Brien") == "Name eq 'O''Brien'"
    assert (
        str(F("SalesOrderHeader/SalesOrderStatus") == "Open") == "SalesOrderHeader/SalesOrderStatus eq 'Open'"
    )
    assert str(F("A") == F("B")) == "A eq B"


def test_null_comparisons() -> None:
    assert str(F("Email") == None) == "Email eq null"  # noqa: E711 - this is the builder's API
    assert str(F("Email").is_null()) == "Email eq null"
    assert str(F("Email").is_not_null()) == "Email ne null"


def test_dates_in_filters() -> None:
    since = datetime(2024, 1, 31, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert str(F("ModifiedDateTime") >= since) == "ModifiedDateTime ge 2024-02-01T04:30:00Z"
    assert str(F("DeliveryDate") == date(2024, 2, 1)) == "DeliveryDate eq 2024-02-01"


def test_enums_only_eq_and_ne() -> None:
    yes = Enum("NoYes", "Yes")
    assert str(F("IsOneTime") == yes) == "IsOneTime eq Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    assert str(F("IsOneTime") != yes) == "IsOneTime ne Microsoft.Dynamics.DataEntities.NoYes'Yes'"
    for compare in (
        F("IsOneTime").__gt__,
        F("IsOneTime").__ge__,
        F("IsOneTime").__lt__,
        F("IsOneTime").__le__,
    ):
        with pytest.raises(ODataQueryError, match="only eq/ne on enums"):
            compare(yes)


def test_wildcards() -> None:
    assert str(F("Name").contains("retail")) == "Name eq '*retail*'"
    assert str(F("Name").startswith("Con")) == "Name eq 'Con*'"
    assert str(F("Name").endswith("Ltd")) == "Name eq '*Ltd'"
    assert str(F("Name").contains("O'B")) == "Name eq '*O''B*'"
    assert str(F("Name").like("A*B")) == "Name eq 'A*B'"


@pytest.mark.parametrize("method", ["contains", "startswith", "endswith"])
def test_literal_star_cannot_be_searched(method: str) -> None:
    with pytest.raises(ODataQueryError, match=r"literal '\*' cannot be searched"):
        getattr(F("Name"), method)("5*")
    with pytest.raises(ODataQueryError, match="non-empty string"):
        getattr(F("Name"), method)("")


def test_star_in_equality_would_be_a_wildcard() -> None:
    with pytest.raises(ODataQueryError, match=r"use \.like\(\)"):
        F("Name") == "a*"  # noqa: B015 - the comparison itself raises


def test_in_expands_to_or() -> None:
    assert (
        str(F("CustomerGroupId").in_(["10", "20"])) == "(CustomerGroupId eq '10' or CustomerGroupId eq '20')"
    )
    assert str(F("CustomerGroupId").in_(("10",))) == "CustomerGroupId eq '10'"
    assert str(F("Blocked").in_([Enum("CustVendorBlocked", "No")])) == (
        "Blocked eq Microsoft.Dynamics.DataEntities.CustVendorBlocked'No'"
    )
    with pytest.raises(ODataQueryError, match="at least one value"):
        F("CustomerGroupId").in_([])
    with pytest.raises(ODataQueryError, match="list of values"):
        F("CustomerGroupId").in_("10")


def test_boolean_combinations_parenthesise_only_where_needed() -> None:
    a, b, c = F("A") == 1, F("B") == 2, F("C") == 3
    assert str(a & b & c) == "A eq 1 and B eq 2 and C eq 3"
    assert str(a | b | c) == "A eq 1 or B eq 2 or C eq 3"
    assert str((a | b) & c) == "(A eq 1 or B eq 2) and C eq 3"
    assert str(a & (b | c)) == "A eq 1 and (B eq 2 or C eq 3)"
    assert str(a | (b & c)) == "A eq 1 or (B eq 2 and C eq 3)"
    assert str(~(a | b)) == "not (A eq 1 or B eq 2)"
    assert str(~a & b) == "not (A eq 1) and B eq 2"
    assert str(F("D").in_([1, 2]) & a) == "(D eq 1 or D eq 2) and A eq 1"


def test_raw_filters_combine_in_parentheses() -> None:
    assert str(raw("X eq 1 or Y eq 2") & (F("A") == 1)) == "(X eq 1 or Y eq 2) and A eq 1"
    assert str("X eq 1" & (F("A") == 1)) == "(X eq 1) and A eq 1"
    assert str((F("A") == 1) | "X eq 1") == "A eq 1 or (X eq 1)"
    with pytest.raises(ODataQueryError):
        raw("  ")


def test_python_boolean_operators_are_refused() -> None:
    with pytest.raises(ODataQueryError, match=re.escape("use & | ~")):
        _ = (F("A") == 1) and (F("B") == 2)


def test_bad_field_names() -> None:
    for name in ("", "A B", "A;B", "A'", "/A", "A//B"):
        with pytest.raises(ODataQueryError, match="invalid property name"):
            F(name)


# ---------------------------------------------------------------------------------------------- query


def test_query_params() -> None:
    query = Query.build(
        "CustomersV3",
        filter=(F("CustomerGroupId") == "10") & F("Name").contains("Con"),
        select=["CustomerAccount", "Name"],
        expand="SalesOrderHeaders",
        orderby=["Name DESC", "CustomerAccount"],
        top=10,
        skip=20,
        count=True,
        cross_company=True,
        extra={"$format": "json"},
    )
    assert query.to_params() == {
        "$filter": "CustomerGroupId eq '10' and Name eq '*Con*'",
        "$select": "CustomerAccount,Name",
        "$expand": "SalesOrderHeaders",
        "$orderby": "Name desc,CustomerAccount",
        "$top": "10",
        "$skip": "20",
        "$count": "true",
        "cross-company": "true",
        "$format": "json",
    }
    assert query.path == "/data/CustomersV3"


def test_query_defaults_are_empty() -> None:
    assert Query.build("CustomersV3").to_params() == {}
    assert Query.build("CustomersV3", filter="  ").to_params() == {}
    assert Query.build("CustomersV3", select="A, B").select == ("A", "B")


@pytest.mark.parametrize("expand", ["Lines/Product", "Lines($select=A)", ["Ok", "Lines/Product"]])
def test_nested_expand_is_rejected(expand: object) -> None:
    with pytest.raises(ODataQueryError, match="only first-level expansion"):
        Query.build("SalesOrderHeadersV2", expand=expand)  # type: ignore[arg-type]


def test_query_validation() -> None:
    with pytest.raises(ODataQueryError, match=r"\$top"):
        Query.build("CustomersV3", top=-1)
    with pytest.raises(ODataQueryError, match=r"\$skip"):
        Query.build("CustomersV3", skip=True)
    with pytest.raises(ODataQueryError, match=r"\$orderby"):
        Query.build("CustomersV3", orderby="Name sideways")
    with pytest.raises(ODataQueryError, match="own argument"):
        Query.build("CustomersV3", extra={"$filter": "x"})
    with pytest.raises(ODataQueryError, match="Filter or a string"):
        Query.build("CustomersV3", filter=5)  # type: ignore[arg-type]


def test_encode_query_uses_percent_20_and_keeps_odata_characters() -> None:
    encoded = encode_query({"$filter": "Name eq 'A&B #1+2' and X eq 100%", "cross-company": "true"})
    assert encoded == "$filter=Name%20eq%20'A%26B%20%231%2B2'%20and%20X%20eq%20100%25&cross-company=true"
