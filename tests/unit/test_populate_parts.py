"""The pure parts of populate: $metadata parsing (of the emulator's real document), value conversion (to
entity types and to custom-service parameter types), record readers, route and HTTP target settings, and
routing of record files."""

from __future__ import annotations

import io
import json
import re
from decimal import Decimal
from typing import Any

import pytest

from emulator.odata.actions import ActionRegistry
from emulator.odata.catalog import build_catalog
from emulator.odata.metadata import build_metadata
from shared.d365.odata_query import entity_path
from shared.pipelines.imports.routing import InputKind, RoutingError, resolve
from shared.pipelines.imports.settings import ImportSettings
from shared.populate.convert import OMIT, ConversionError, key_literal, same_value, to_wire
from shared.populate.deadline import Deadline, OutOfTime
from shared.populate.metadata import EntityModel, PropertyModel, parse_metadata
from shared.populate.records import InputError, RecordFormat, RecordLimitExceeded, read_records
from shared.populate.service_params import ParameterError, to_parameter
from shared.populate.settings import PopulateSettings
from shared.settings_reader import ConfigurationError, SettingsReader


@pytest.fixture(scope="module")
def models() -> dict[str, EntityModel]:
    document = build_metadata(build_catalog(), ActionRegistry())
    return parse_metadata(io.BytesIO(document), ["CustomersV3", "LegalEntities"])


def test_metadata_gives_keys_types_and_enum_members(models: dict[str, EntityModel]) -> None:
    assert set(models) == {"CustomersV3", "LegalEntities"}
    customers = models["CustomersV3"]
    assert (customers.type_name, customers.keys) == ("CustomerV3", ("dataAreaId", "CustomerAccount"))
    assert customers.company_specific
    assert not models["LegalEntities"].company_specific
    account = customers.field("CustomerAccount")
    assert account is not None
    assert (account.edm_type, account.nullable, account.max_length) == ("Edm.String", False, 20)
    on_hold = customers.field("OnHoldStatus")
    assert on_hold is not None
    assert on_hold.enum_members is not None
    assert on_hold.enum_members[:3] == (("No", 0), ("Invoice", 1), ("All", 2))


def prop(edm: str, **kwargs: Any) -> PropertyModel:
    return PropertyModel("F", edm, **kwargs)


@pytest.mark.parametrize(
    ("edm", "value", "expected"),
    [
        ("Edm.Int32", "42", 42),
        ("Edm.Int64", 7.0, 7),
        ("Edm.Decimal", "1500.50", 1500.5),
        ("Edm.Decimal", "12", 12),
        ("Edm.Boolean", "Yes", True),
        ("Edm.Boolean", "0", False),
        ("Edm.Date", "2024-05-01", "2024-05-01"),
        ("Edm.Date", "2024-05-01T00:00:00Z", "2024-05-01"),
        ("Edm.DateTimeOffset", "2024-05-01T10:30:00+02:00", "2024-05-01T08:30:00Z"),
        ("Edm.DateTimeOffset", "2024-05-01", "2024-05-01T12:00:00Z"),  # date-only: noon UTC (ref §1.1)
        ("Edm.DateTimeOffset", "2024-05-01 10:30Z", "2024-05-01T10:30:00Z"),
        ("Edm.DateTimeOffset", "0999-01-02T03:04:05Z", "0999-01-02T03:04:05Z"),  # zero-padded year
        ("Edm.Decimal", "1.005", 1.005),
        ("Edm.Decimal", Decimal("12345678901234.5"), 12345678901234.5),
        ("Edm.String", 12, "12"),
    ],
)
def test_values_convert_to_the_wire_form(edm: str, value: Any, expected: Any) -> None:
    assert to_wire(prop(edm), value, from_text=isinstance(value, str)) == expected


@pytest.mark.parametrize(
    ("edm", "value", "message"),
    [
        ("Edm.Int32", "4.5", "whole number"),
        ("Edm.Int32", str(2**31), "whole number"),
        ("Edm.Decimal", "1,5", "decimal separator"),
        ("Edm.Decimal", True, "a number"),
        ("Edm.Boolean", "maybe", "true or false"),
        ("Edm.Date", "01/05/2024", "YYYY-MM-DD"),
        ("Edm.DateTimeOffset", "yesterday", "ISO 8601"),
        ("Edm.DateTimeOffset", "2024-05-01 10:30", "with its offset"),  # naive: refused, not taken as UTC
        ("Edm.Guid", "nope", "GUID"),
        ("Edm.Decimal", "1E+400", "a number D365 can hold"),  # not a 401-digit integer
        ("Edm.Decimal", "1_000", "no thousands separators"),
        ("Edm.Decimal", Decimal("12345678901234.5678"), "JSON carries exactly"),  # not rounded
        ("Edm.Decimal", None, "x"),
    ],
)
def test_values_that_do_not_fit_say_which_field_and_why(edm: str, value: Any, message: str) -> None:
    if value is None:
        value = [1]  # a JSON array for a number: shown as JSON, not as a Python repr
        message = r"field 'F': \[1\] is not a number"
    with pytest.raises(ConversionError, match=message) as caught:
        to_wire(prop(edm), value, from_text=isinstance(value, str))
    assert "field 'F'" in str(caught.value)


def test_enums_strings_and_empty_cells() -> None:
    enum = prop("X.NoYes", enum_members=(("No", 0), ("Yes", 1)))
    assert to_wire(enum, "yes", from_text=True) == "Yes"
    assert to_wire(enum, 1, from_text=False) == "Yes"
    with pytest.raises(ConversionError, match=r"enum NoYes \(No, Yes\)"):
        to_wire(enum, "Maybe", from_text=True)
    assert to_wire(enum, True, from_text=False) == "Yes"  # JSON booleans for a NoYes enum
    assert to_wire(enum, "false", from_text=True) == "No"
    with pytest.raises(ConversionError, match="field 'F': true is not a value of enum E"):
        to_wire(prop("X.E", enum_members=(("A", 0), ("B", 1))), True, from_text=False)
    with pytest.raises(ConversionError, match="field 'F': true is not a number"):
        to_wire(prop("Edm.Decimal"), True, from_text=False)
    assert to_wire(prop("Edm.Decimal"), "", from_text=True) is OMIT
    assert to_wire(prop("Edm.String"), "", from_text=True) == ""
    with pytest.raises(ConversionError, match="at most 3 fit"):
        to_wire(prop("Edm.String", max_length=3), "abcd", from_text=True)
    with pytest.raises(ConversionError, match="cannot be empty"):
        to_wire(prop("Edm.String", nullable=False), None, from_text=False)


def test_same_value_compares_like_d365_stores() -> None:
    assert same_value(prop("Edm.Decimal"), 1500.5, 1500.5)
    assert same_value(prop("Edm.Decimal"), 12.0, 12)
    assert same_value(prop("Edm.DateTimeOffset"), "2024-05-01T08:30:00+00:00", "2024-05-01T08:30:00Z")
    assert same_value(prop("X.E", enum_members=(("A", 0),)), "a", "A")
    assert not same_value(prop("Edm.String"), "abc", "ABC")
    assert same_value(prop("Edm.String"), None, "")
    assert same_value(prop("Edm.Decimal"), 1500.5, to_wire(prop("Edm.Decimal"), "1500.500", from_text=True))
    assert not same_value(prop("Edm.Decimal"), 1500.5, 1500.50000001)
    # date-only input for a date-time field: D365 shows it at noon UTC (ref §1.1), compared by date
    assert same_value(
        prop("Edm.DateTimeOffset"), "2019-10-04T12:00:00Z", "2019-10-04T12:00:00Z", date_only=True
    )
    assert same_value(
        prop("Edm.DateTimeOffset"), "2019-10-04T00:00:00Z", "2019-10-04T12:00:00Z", date_only=True
    )
    assert not same_value(prop("Edm.DateTimeOffset"), "2019-10-04T00:00:00Z", "2019-10-04T12:00:00Z")
    assert not same_value(prop("Edm.Boolean"), 1, True)


def test_key_literals_follow_the_property_type() -> None:
    stamp, guid = prop("Edm.DateTimeOffset"), prop("Edm.Guid")
    key = {
        "At": key_literal(stamp, to_wire(stamp, "2019-10-04T10:00:00+02:00", from_text=True)),
        "Id": key_literal(guid, to_wire(guid, "6F0B3C41-5D1E-4B7A-9C55-0D365F0E0001", from_text=True)),
        "N": key_literal(prop("Edm.Int32"), 5),
        "S": key_literal(prop("Edm.String"), "2019"),
    }
    assert entity_path("Things", key) == (
        "/data/Things(At=2019-10-04T08:00:00Z,Id=6f0b3c41-5d1e-4b7a-9c55-0d365f0e0001,N=5,S='2019')"
    )


def test_a_complex_type_s_properties_stay_out_of_the_entity() -> None:
    ns = 'xmlns="http://docs.oasis-open.org/odata/ns/edm"'
    document = f"""<?xml version="1.0"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0"><edmx:DataServices>
<Schema Namespace="Microsoft.Dynamics.DataEntities" {ns}>
<EntityType Name="Cust"><Key><PropertyRef Name="Id"/></Key>
<Property Name="Id" Type="Edm.String"/></EntityType>
<ComplexType Name="Contract"><Property Name="Leaked" Type="Edm.Int32"/></ComplexType>
<EntityType Name="Other"><Key><PropertyRef Name="K"/></Key><Property Name="K" Type="Edm.Int32"/></EntityType>
<EntityContainer Name="C"><EntitySet Name="Custs" EntityType="Microsoft.Dynamics.DataEntities.Cust"/>
<EntitySet Name="Others" EntityType="Microsoft.Dynamics.DataEntities.Other"/></EntityContainer>
</Schema></edmx:DataServices></edmx:Edmx>"""
    found = parse_metadata(io.BytesIO(document.encode()), ["Custs"])
    assert list(found) == ["Custs"]
    assert list(found["Custs"].properties) == ["Id"]
    with pytest.raises(ValueError, match="unreadable"):
        parse_metadata(io.BytesIO(b"<Edmx><broken"), ["Custs"])


def test_csv_json_and_ndjson_records() -> None:
    csv_data = '\ufeffId,Name,Skip\r\nA,Ann,x\r\n\r\nB,"Bo, Jr",y\r\n'.encode()
    mapped = RecordFormat(field_map={"Id": "CustomerAccount", "Name": "OrganizationName"})
    records = read_records(csv_data, "f.csv", mapped, limit=10)
    assert [(r.number, r.line, r.values) for r in records] == [
        (1, 2, {"CustomerAccount": "A", "OrganizationName": "Ann"}),
        (2, 4, {"CustomerAccount": "B", "OrganizationName": "Bo, Jr"}),
    ]
    headerless = read_records(
        b"A;1\nB;2\n", "f.txt", RecordFormat(columns=("K", "V"), delimiter=";"), limit=5
    )
    assert [r.values for r in headerless] == [{"K": "A", "V": "1"}, {"K": "B", "V": "2"}]
    utf16 = "K\nÄ\n".encode("utf-16")
    assert read_records(utf16, "f.csv", RecordFormat(), limit=5)[0].values == {"K": "Ä"}
    as_json = read_records(json.dumps({"records": [{"K": 1}]}).encode(), "f.json", RecordFormat(), limit=5)
    assert (as_json[0].values, as_json[0].from_text) == ({"K": 1}, False)
    ndjson = read_records(b'{"K": 1}\n\n{"K": 2}\n', "f.jsonl", RecordFormat(), limit=5)
    assert [r.line for r in ndjson] == [1, 3]
    separators = read_records('{"K": "a\u2028b\u0085c"}\n'.encode(), "f.ndjson", RecordFormat(), limit=5)
    assert separators[0].values == {"K": "a\u2028b\u0085c"}  # split on LF only
    exact = read_records(b'[{"V": 1.005, "W": 12345678901234.5678}]', "f.json", RecordFormat(), limit=5)
    assert exact[0].values == {"V": Decimal("1.005"), "W": Decimal("12345678901234.5678")}


class CountingStream:
    """A binary stream that counts what was read from it."""

    def __init__(self, data: bytes) -> None:
        self.data, self.read_bytes = io.BytesIO(data), 0

    def read(self, size: int = -1) -> bytes:
        chunk = self.data.read(size)
        self.read_bytes += len(chunk)
        return chunk


@pytest.mark.parametrize(
    ("name", "encode"),
    [("f.json", lambda rows: json.dumps(rows)),
     ("f.ndjson", lambda rows: "\n".join(json.dumps(r) for r in rows)),
     ("f.csv", lambda rows: "K,V\n" + "".join(f"{r['K']},{r['V']}\n" for r in rows))],
)  # fmt: skip
def test_a_stream_is_read_only_just_past_the_record_limit(name: str, encode: Any) -> None:
    rows = [{"K": f"K{n}", "V": "x" * 50} for n in range(20_000)]
    data = encode(rows).encode()
    stream = CountingStream(data)
    with pytest.raises(RecordLimitExceeded):
        read_records(stream, name, RecordFormat(), limit=100)
    assert stream.read_bytes < len(data) / 10
    whole = read_records(CountingStream(data), name, RecordFormat(), limit=20_000)
    assert [r.values["K"] for r in whole[-2:]] == ["K19998", "K19999"]


def test_a_json_array_element_split_across_reads() -> None:
    long_text = "é" * 200_000  # longer than one read, multi-byte
    data = json.dumps([{"K": 1}, {"K": long_text}, {"K": 12345}], ensure_ascii=False).encode()
    assert [r.values["K"] for r in read_records(CountingStream(data), "f.json", RecordFormat(), limit=5)] == [
        1, long_text, 12345
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"K,K\n1,2\n", "f.csv", "twice"),
        (b"K\n1,2\n", "f.csv", "line 2: 2 cells"),
        (b"A,B,C\n1,2\n", "f.csv", "line 2: 2 cells, but the header has 3"),  # short rows too
        (b'[{"K": 1}] [2]', "f.json", "extra data"),
        (b'[{"K": 1} {"K": 2}]', "f.json", "expected ',' or ']'"),
        (b'[{"K": 1},', "f.json", "not valid JSON"),
        (b"[1]", "f.json", "record 1 is not a JSON object"),
        (b'{"K": 1}\n{oops\n', "f.ndjson", "line 2 is not valid JSON"),
        (b"\xff\xfe\xfa", "f.csv", "not UTF-8"),
        (b"a", "f.xml", "records are read from"),
    ],
)
def test_unreadable_input_says_where(data: bytes, name: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        read_records(data, name, RecordFormat(), limit=5)


def test_the_record_limit_stops_reading() -> None:
    with pytest.raises(RecordLimitExceeded):
        read_records(b"K\n1\n2\n3\n", "f.csv", RecordFormat(), limit=2)


def settings(routes: Any) -> ImportSettings:
    reader = SettingsReader({"IMPORT_ROUTES": json.dumps(routes)})
    found = ImportSettings.from_reader(reader)
    reader.raise_for_problems()
    return found


def test_odata_and_service_routes_read_their_fields() -> None:
    odata, service = settings(
        [
            {"name": "c", "target": "odata", "entity_set": "CustomersV3", "mode": "create",
             "changeset": "record", "all_or_nothing": True, "max_records": 10,
             "field_map": {"Id": "CustomerAccount"}, "legal_entity": "USMF"},
            {"name": "s", "target": "service", "service_group": "G", "service": "S", "operation": "o",
             "call": "whole_file", "records_parameter": "_records", "key_fields": ["Id"]},
        ]
    ).routes  # fmt: skip
    assert odata.populate is not None
    assert odata.populate.entity is not None
    assert (odata.populate.entity.mode, odata.populate.entity.group_size) == ("create", 1)
    assert odata.populate.records.field_map == {"Id": "CustomerAccount"}
    assert odata.on_redrop == "reimport"  # writing again is safe
    assert service.on_redrop == "skip"  # a custom service is not safe to run twice
    assert odata.max_file_bytes == service.max_file_bytes == 32 * 1024 * 1024  # small files
    assert odata.target_key("usmf") == "odata|customersv3|usmf|create"
    assert service.populate is not None
    assert service.populate.service is not None
    assert service.populate.service.name == "G/S/o"
    assert service.target_key("") == "service|g/s/o|"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ({"entity_set": "Bad Name"}, "'entity_set' must be a name"),
        ({"entity_set": "X", "mode": "merge"}, "'mode' must be one of create, update, upsert"),
        ({"entity_set": "X", "max_records": 9999}, "'max_records' must be a whole number from 1 to 5000"),
        ({"target": "service", "service_group": "G", "service": "S", "operation": "o"},
         "call 'per_record' needs 'record_parameter'"),
        ({"target": "service", "service_group": "G", "service": "S", "operation": "o", "call": "whole_file"},
         "call 'whole_file' needs 'records_parameter'"),
        ({"target": "service", "service_group": "G", "service": "S", "operation": "o", "legal_entity": "usmf",
          "record_parameter": "_r"}, "a legal entity is set (legal_entity or legal_entity_from) but not"),
        ({"target": "service", "service_group": "G", "service": "S", "operation": "o",
          "legal_entity_from": "folder", "record_parameter": "_r"}, "a legal entity is set"),
        ({"entity_set": "X", "max_file_mb": 65}, "'max_file_mb' must be a whole number from 1 to 64"),
    ],
)  # fmt: skip
def test_route_problems_say_which_field(route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings([{"name": "c", "target": "odata", **route}])
    assert f"IMPORT_ROUTES[0]: {message}" in "\n".join(caught.value.problems)


def test_record_files_route_to_populate_routes_only() -> None:
    routes = settings(
        [{"name": "c", "target": "odata", "entity_set": "CustomersV3", "legal_entity": "usmf"}]
    ).routes
    match = resolve(routes, "c/batch.ndjson")
    assert (match.kind, match.legal_entity) == (InputKind.RECORDS, "usmf")
    with pytest.raises(RoutingError, match="writes records from"):
        resolve(routes, "c/package.zip")


def test_http_targets_are_an_allow_list() -> None:
    reader = SettingsReader(
        {
            "POPULATE_HTTP_TARGETS": json.dumps(
                [{"name": "customers", "entity_set": "CustomersV3", "legal_entity": "usmf"},
                 {"name": "Customers", "entity_set": "X", "extra": 1}]
            ),
            "POPULATE_HTTP_MAX_RECORDS": "50",
        }
    )  # fmt: skip
    found = PopulateSettings.from_reader(reader)
    assert found.http_target("CUSTOMERS") is not None
    assert found.http_target("vendors") is None
    assert found.http_targets[0].entity.max_records == 50
    assert reader.problems == [
        "POPULATE_HTTP_TARGETS[1]: unknown key(s) extra; known: " + ", ".join(sorted(
            ["all_or_nothing", "allow_record_company", "changeset", "changeset_size", "entity_set",
             "legal_entity", "legal_entity_from_request", "max_records", "mode", "name"]))
    ]  # fmt: skip


def test_populate_keys_on_a_package_route_are_refused() -> None:
    route = {"name": "p", "target": "package", "definition_group": "G", "entity": "E", "mode": "upsert"}
    with pytest.raises(ConfigurationError, match="mode: only for targets 'odata' and 'service'"):
        settings([route])


@pytest.mark.parametrize(
    ("type_name", "value", "from_text", "wire"),
    [
        ("int", " 42 ", True, 42),
        ("Int32", "-7", True, -7),
        ("int64", "9007199254740993", True, 9007199254740993),
        ("int", 3.0, False, 3),
        ("real", "1500.50", True, 1500.5),
        ("real", "12", True, 12),
        ("System.Decimal", 2, False, 2),
        ("boolean", "Yes", True, True),
        ("boolean", "0", True, False),
        ("boolean", False, False, False),
        ("date", "2024-05-01", True, "2024-05-01"),
        ("date", "2024-05-01T10:00:00Z", True, "2024-05-01"),
        ("utcdatetime", "2024-05-01 08:30Z", True, "2024-05-01T08:30:00Z"),
        ("real", Decimal("1.005"), False, 1.005),
        ("int", Decimal("3"), False, 3),
        ("UtcDateTime", "2024-05-01T08:30:00+02:00", False, "2024-05-01T06:30:00Z"),
        ("guid", "6F0B3C41-5D1E-4B7A-9C55-0D365F0E0001", True, "6f0b3c41-5d1e-4b7a-9c55-0d365f0e0001"),
        ("str", " kept as is ", True, " kept as is "),
        ("str", "", True, ""),
        ("str", 12, False, "12"),
        ("int", "", True, None),  # an empty cell: X++ keeps its default
        ("int", None, False, None),
        ("NoYes", "Yes", True, "Yes"),  # an enum: its symbol, as read
        ("CustAccount", "0042", True, "0042"),  # an EDT the description does not resolve: as read
        ("EmuContact", '{"ContactId": "c-1"}', True, {"ContactId": "c-1"}),  # a data contract from CSV
        ("EmuContact", {"ContactId": "c-1", "Priority": "2"}, False, {"ContactId": "c-1", "Priority": "2"}),
        ("List<str>", '["a", "b"]', True, ["a", "b"]),
        ("List<EmuContact>", [{"ContactId": "c-1"}], False, [{"ContactId": "c-1"}]),
        ("anytype", "x", True, "x"),
    ],
)
def test_values_are_converted_to_the_declared_parameter_type(
    type_name: str, value: Any, from_text: bool, wire: Any
) -> None:
    assert to_parameter(type_name, value, from_text=from_text) == wire


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("int", "3.5", "'3.5' is not a whole number (int)"),
        ("int", "2147483648", "is not a whole number (int)"),
        ("int", True, "'true' is not a whole number (int)"),
        ("real", "12,5", "'12,5' is not a number (real; use '.' as the decimal separator)"),
        ("real", "NaN", "is not a number"),
        ("boolean", "maybe", "'maybe' is not true or false (boolean)"),
        ("date", "01/05/2024", "is not a date (date, YYYY-MM-DD)"),
        ("date", "2024-02-30", "is not a date"),
        ("utcdatetime", "yesterday", "is not a date-time (utcdatetime, ISO 8601"),
        ("utcdatetime", "2024-05-01 08:30", "is not a date-time"),  # no offset: refused
        ("guid", "not-a-guid", "is not a GUID"),
        ("str", {"a": 1}, "is not text"),
        ("List<str>", "a,b", "'a,b' is not a JSON array"),
        ("List<str>", {"a": 1}, "is not a list (List<str>: give a JSON array)"),
        ("EmuContact", "{broken", "'{broken' is not a JSON object (a data contract)"),
    ],
)
def test_a_value_that_does_not_fit_its_parameter_says_what_was_expected(
    type_name: str, value: Any, expected: str
) -> None:
    with pytest.raises(ParameterError, match=re.escape(expected)):
        to_parameter(type_name, value, from_text=isinstance(value, str))


def test_http_limits_and_time_limits_are_capped() -> None:
    reader = SettingsReader({"POPULATE_HTTP_MAX_BYTES": str(64 * 1024 * 1024)})
    PopulateSettings.from_reader(reader)
    assert "POPULATE_HTTP_MAX_BYTES" in reader.problems[0]
    reader = SettingsReader({"POPULATE_HTTP_TIME_LIMIT_SECONDS": "300"})
    PopulateSettings.from_reader(reader)
    assert "POPULATE_HTTP_TIME_LIMIT_SECONDS" in reader.problems[0]
    defaults = PopulateSettings.from_reader(SettingsReader({}))
    assert (defaults.http_time_limit_seconds, defaults.file_time_limit_seconds) == (120.0, 420.0)


def test_a_deadline_refuses_what_cannot_end_in_time() -> None:
    now = [0.0]
    deadline = Deadline(10, clock=lambda: now[0])
    deadline.check(5)
    now[0] = 6
    with pytest.raises(OutOfTime, match="time limit of 10 s"):
        deadline.check(4)
    Deadline(None).check(10**9)


def test_a_call_never_gets_more_time_than_the_run_has_left() -> None:
    from shared.populate.deadline import Deadline, OutOfTime

    now = [100.0]
    deadline = Deadline(30, clock=lambda: now[0], margin=1.0)
    assert deadline.call_budget() == 29.0
    now[0] = 125.0
    assert deadline.call_budget() == 4.0
    now[0] = 129.5
    with pytest.raises(OutOfTime):
        deadline.call_budget()  # no room left: the call is not started
    assert Deadline(None).call_budget() is None
