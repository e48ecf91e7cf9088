"""Source -> staging: map the columns of a data file to an entity's fields and convert text to typed values.

What fails here never reaches the target, and lands in the staging error file (GetImportStagingErrorFileUrl):
values that do not convert to the field's type, unknown enum values, and a second row with the same key in
one execution (the staging table's unique index). Field rules (mandatory fields, foreign keys, lengths) are
checked later by the entity's own write path (target.py), as D365 does in validateWrite.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from emulator.dmf.datafiles import SourceRows
from emulator.dmf.definitions import DmfEntity
from emulator.dmf.packages import FieldMap, PackageError
from emulator.odata.schema import (
    EDM_BOOLEAN,
    EDM_DATE,
    EDM_DATETIMEOFFSET,
    EDM_DECIMAL,
    EDM_ENUM,
    EDM_GUID,
    EDM_INT32,
    EDM_INT64,
    Property,
)
from emulator.odata.serialize import enum_member
from emulator.odata.store import FIRST_REC_ID

_TYPE_LABELS = {
    EDM_INT32: "Integer",
    EDM_INT64: "Int64",
    EDM_DECIMAL: "Real",
    EDM_BOOLEAN: "NoYes",
    EDM_DATETIMEOFFSET: "UtcDateTime",
    EDM_DATE: "Date",
    EDM_GUID: "Guid",
}
_DATETIME_FORMATS = (
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%m/%d/%Y %I:%M:%S %p",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%Y-%m-%d",
    "%m/%d/%Y",
)
_EXCEL_EPOCH = datetime(1899, 12, 30, tzinfo=UTC)
_NUMBER = re.compile(r"^[+-]?(\d+|\d{1,3}(,\d{3})+)(\.\d*)?([eE][+-]?\d+)?$")


class ConversionError(Exception):
    pass


@dataclass(frozen=True)
class ColumnMap:
    column: str  # as written in the file
    prop: Property


@dataclass
class StagedRow:
    rec_id: int  # staging RecId: the RecordId of GetExecutionErrors
    line: int
    values: dict[str, Any]  # entity property -> JSON value


@dataclass
class StagingFailure:
    rec_id: int
    line: int
    source: dict[str, str]
    problems: list[tuple[str, str]]  # (field, message)


@dataclass
class StagingResult:
    rows: list[StagedRow] = field(default_factory=list)
    failures: list[StagingFailure] = field(default_factory=list)


def manifest_columns(entity: DmfEntity, field_map: Iterable[FieldMap]) -> list[ColumnMap]:
    """The manifest's EntityMap: XMLField (column) -> EntityField (staging field name)."""
    columns: list[ColumnMap] = []
    for item in field_map:
        prop = entity.property_for(item.entity_field)
        if prop is None:
            raise PackageError(
                f"The mapping is incorrect for entity {entity.name}: the staging field "
                f"'{item.entity_field}' does not exist."
            )
        columns.append(ColumnMap(item.xml_field or item.entity_field, prop))
    return columns


def automatic_columns(entity: DmfEntity, names: Iterable[str]) -> list[ColumnMap]:
    """A generated mapping: every column named like a staging field (what a recurring file job uses)."""
    return [ColumnMap(name, prop) for name in names if (prop := entity.property_for(name)) is not None]


def _lookup(source: dict[str, str], column: str) -> str | None:
    if column in source:
        return source[column]
    wanted = column.lower()
    return next((v for k, v in source.items() if k.lower() == wanted), None)


def stage_rows(
    entity: DmfEntity,
    columns: list[ColumnMap],
    source: SourceRows,
    company: str,
    first_rec_id: int = FIRST_REC_ID,
) -> StagingResult:
    result = StagingResult()
    seen: set[tuple[str, ...]] = set()
    for offset, (line, raw) in enumerate(source.rows):
        rec_id = first_rec_id + offset
        values: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        for column in columns:
            text = _lookup(raw, column.column)
            if text is None:
                continue
            try:
                value = convert(column.prop, text)
            except ConversionError as exc:
                problems.append((column.prop.name, str(exc)))
                continue
            if value is not None:
                values[column.prop.name] = value
        if entity.entity.company_specific:
            values["dataAreaId"] = str(values.get("dataAreaId") or company).lower()
        if not problems:
            key = tuple(str(values.get(k, "")).casefold() for k in entity.entity.keys)
            if all(key) and key in seen:
                shown = ", ".join(
                    f"{k}: {values.get(k, '')}" for k in entity.entity.keys if k != "dataAreaId"
                )
                problems.append(
                    (
                        "",
                        f"Cannot create a record in {entity.name} staging ({entity.aot_name}Staging). "
                        f"{shown}. The record already exists in this execution.",
                    )
                )
            seen.add(key)
        if problems:
            result.failures.append(StagingFailure(rec_id, line, raw, problems))
        else:
            result.rows.append(StagedRow(rec_id, line, values))
    return result


def convert(prop: Property, text: str) -> Any:
    """Text from a data file -> the JSON value the entity's write path expects; None = not given."""
    value = text.strip()
    if value == "":
        return None
    edm = prop.edm_type
    staging_name = prop.name.upper()
    try:
        if edm in (EDM_INT32, EDM_INT64):
            number = float(value.replace(",", "")) if _NUMBER.match(value) else None
            if number is None or not number.is_integer():
                raise ValueError(value)
            return int(number)
        if edm == EDM_DECIMAL:
            if not _NUMBER.match(value):
                raise ValueError(value)
            return float(value.replace(",", ""))
        if edm == EDM_BOOLEAN:
            lowered = value.lower()
            if lowered in ("1", "yes", "true"):
                return True
            if lowered in ("0", "no", "false"):
                return False
            raise ValueError(value)
        if edm == EDM_DATETIMEOFFSET:
            return _datetime(value).strftime("%Y-%m-%dT%H:%M:%SZ")
        if edm == EDM_DATE:
            return _datetime(value).strftime("%Y-%m-%d")
        if edm == EDM_GUID:
            return str(uuid.UUID(value.strip("{}")))
    except (ValueError, OverflowError):
        raise ConversionError(
            f"Error converting the value '{value}' of field {staging_name} to the type "
            f"'{_TYPE_LABELS.get(edm, edm)}'."
        ) from None
    if edm == EDM_ENUM and prop.enum_type is not None:
        member = enum_member(prop, value)
        if member is None:
            raise ConversionError(
                f"The value '{value}' of field {staging_name} is not a member of the enumeration "
                f"'{prop.enum_type.name}' ({', '.join(prop.enum_type.members)})."
            )
        return member
    return value


def _datetime(value: str) -> datetime:
    if _NUMBER.match(value):  # an Excel serial date
        return _EXCEL_EPOCH + timedelta(days=float(value.replace(",", "")))
    parsed: datetime | None = None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        for pattern in _DATETIME_FORMATS:
            try:
                parsed = datetime.strptime(value, pattern)
                break
            except ValueError:
                continue
    if parsed is None:
        raise ValueError(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
