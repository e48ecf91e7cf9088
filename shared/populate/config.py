"""Configuration of a populate target: the ``odata`` and ``service`` route types of ``IMPORT_ROUTES`` and the
HTTP function's allow-listed entities (``POPULATE_HTTP_TARGETS``). See docs/populate.md for the schema.

Parsed with ``JsonFields`` so every problem is reported with where it is (``IMPORT_ROUTES[1]: ...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from shared.populate.records import FORMATS, RecordFormat
from shared.settings_reader import JsonFields

__all__ = [
    "DEFAULT_MAX_RECORDS",
    "POPULATE_ROUTE_KEYS",
    "POPULATE_TARGETS",
    "EntityTarget",
    "PopulateRoute",
    "ServiceTarget",
    "entity_target",
    "populate_route",
]

POPULATE_TARGETS = ("odata", "service")
DEFAULT_MAX_RECORDS = 5000
MODES = ("create", "update", "upsert")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
ENTITY_KEYS = {
    "entity_set",
    "mode",
    "changeset",
    "changeset_size",
    "all_or_nothing",
    "max_records",
    "allow_record_company",
}
FILE_KEYS = {"input_format", "field_map", "columns", "delimiter", "encoding"}
SERVICE_KEYS = {
    "service_group",
    "service",
    "operation",
    "call",
    "record_parameter",
    "records_parameter",
    "parameter_map",
    "legal_entity_parameter",
    "key_fields",
}
#: Keys the ``odata``/``service`` route types add to an ``IMPORT_ROUTES`` entry.
POPULATE_ROUTE_KEYS = ENTITY_KEYS | FILE_KEYS | SERVICE_KEYS


@dataclass(frozen=True)
class EntityTarget:
    """Where and how records are written through OData."""

    entity_set: str
    mode: str = "upsert"  # create | update | upsert
    changeset: str = "group"  # record = one changeset per record; group = ``changeset_size`` per changeset
    changeset_size: int = 20
    all_or_nothing: bool = False  # one changeset for everything: one bad record and nothing is written
    max_records: int = DEFAULT_MAX_RECORDS
    # a record's own dataAreaId may name another legal entity than the route's or request's one
    allow_record_company: bool = False

    @property
    def group_size(self) -> int:
        return 1 if self.changeset == "record" else self.changeset_size


@dataclass(frozen=True)
class ServiceTarget:
    """A JSON custom service operation called per record or once with every record."""

    service_group: str
    service: str
    operation: str
    call: str = "per_record"  # per_record | whole_file
    record_parameter: str = ""  # per record: the record as this (data contract) parameter
    records_parameter: str = ""  # whole file: the list of records as this parameter
    parameter_map: tuple[tuple[str, str], ...] | None = None  # per record: field -> parameter
    legal_entity_parameter: str = ""  # also send the legal entity as this parameter
    key_fields: tuple[str, ...] = ()  # record fields shown as each record's key in the results
    max_records: int = DEFAULT_MAX_RECORDS

    @property
    def name(self) -> str:
        return f"{self.service_group}/{self.service}/{self.operation}"


@dataclass(frozen=True)
class PopulateRoute:
    """What an ``odata`` or ``service`` import route adds to its ``Route``."""

    entity: EntityTarget | None
    service: ServiceTarget | None
    records: RecordFormat

    @property
    def max_records(self) -> int:
        if self.entity is not None:
            return self.entity.max_records
        assert self.service is not None
        return self.service.max_records

    def target_key(self, legal_entity: str) -> str:
        """The ledger key: the same content to the same target is written once (see ledger.py)."""
        if self.entity is not None:
            return f"odata|{self.entity.entity_set.lower()}|{legal_entity}|{self.entity.mode}"
        assert self.service is not None
        return f"service|{self.service.name.lower()}|{legal_entity}"


def _identifier(fields: JsonFields, key: str, *, required: bool) -> str:
    value = fields.text(key, required=required)
    if value and not _IDENTIFIER.match(value):
        fields.problem(f"{key!r} must be a name of letters, digits and '_' ({value!r} is not)")
    return value


def entity_target(fields: JsonFields, *, default_max: int = DEFAULT_MAX_RECORDS) -> EntityTarget:
    return EntityTarget(
        entity_set=_identifier(fields, "entity_set", required=True),
        mode=fields.choice("mode", MODES, "upsert"),
        changeset=fields.choice("changeset", ("record", "group"), "group"),
        changeset_size=fields.whole("changeset_size", 20, 1, 1000),
        all_or_nothing=fields.flag("all_or_nothing", False),
        max_records=fields.whole("max_records", default_max, 1, 5000),
        allow_record_company=fields.flag("allow_record_company", False),
    )


def _string_map(fields: JsonFields, key: str) -> tuple[tuple[str, str], ...] | None:
    raw = fields.item.get(key)
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) and v for v in raw.values()):
        fields.problem(f"{key!r} must be a non-empty object of name -> name")
        return None
    return tuple((str(k), str(v)) for k, v in raw.items())


def _record_format(fields: JsonFields) -> RecordFormat:
    field_map = _string_map(fields, "field_map")
    columns: Any = fields.item.get("columns")
    if columns is not None and (
        not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns)
    ):
        fields.problem("'columns' must be a non-empty list of field names (for CSV files without a header)")
        columns = None
    delimiter = fields.text("delimiter", ",")
    if len(delimiter) != 1:
        fields.problem("'delimiter' must be one character")
        delimiter = ","
    return RecordFormat(
        input_format=fields.choice("input_format", FORMATS, "auto"),
        field_map=dict(field_map) if field_map else None,
        columns=tuple(columns) if columns else None,
        delimiter=delimiter,
        encoding=fields.text("encoding") or None,
    )


def _names(fields: JsonFields, key: str) -> tuple[str, ...]:
    raw = fields.item.get(key, [])
    if not isinstance(raw, list) or not all(isinstance(v, str) and v for v in raw):
        fields.problem(f"{key!r} must be a list of field names")
        return ()
    return tuple(raw)


def _service_target(fields: JsonFields) -> ServiceTarget:
    call = fields.choice("call", ("per_record", "whole_file"), "per_record")
    target = ServiceTarget(
        service_group=fields.text("service_group", required=True),
        service=fields.text("service", required=True),
        operation=fields.text("operation", required=True),
        call=call,
        record_parameter=_identifier(fields, "record_parameter", required=False),
        records_parameter=_identifier(fields, "records_parameter", required=False),
        parameter_map=_string_map(fields, "parameter_map"),
        legal_entity_parameter=_identifier(fields, "legal_entity_parameter", required=False),
        key_fields=_names(fields, "key_fields"),
        max_records=fields.whole("max_records", DEFAULT_MAX_RECORDS, 1, 5000),
    )
    if call == "whole_file" and not target.records_parameter:
        fields.problem("call 'whole_file' needs 'records_parameter' (the list parameter of the operation)")
    if call == "per_record" and not (target.record_parameter or target.parameter_map):
        fields.problem("call 'per_record' needs 'record_parameter' (a data contract) or 'parameter_map'")
    company_given = bool(fields.item.get("legal_entity")) or fields.item.get("legal_entity_from") in (
        "folder",
        "file_name",
    )
    if company_given and not target.legal_entity_parameter:
        # a custom service runs in the caller's default company: a legal entity it is not told is ignored
        fields.problem(
            "a legal entity is set (legal_entity or legal_entity_from) but not 'legal_entity_parameter': "
            "a custom service runs in the app's default company unless the legal entity is passed as a "
            "parameter; name that parameter, or remove the legal entity"
        )
    return target


def populate_route(fields: JsonFields, target: str) -> PopulateRoute:
    """The ``odata``/``service`` part of an ``IMPORT_ROUTES`` entry (``target`` already checked)."""
    records = _record_format(fields)
    if target == "odata":
        return PopulateRoute(entity_target(fields), None, records)
    return PopulateRoute(None, _service_target(fields), records)
