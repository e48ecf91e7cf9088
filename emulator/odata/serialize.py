"""Conversions between storage values and the OData JSON wire form, in both directions.

Rows leave as JSON built by SQLite itself (``json_object``), so a 10,000-row page costs no Python per field;
payloads arrive as JSON and are checked against the Edm types here, with ODataLib-like messages.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from emulator.odata.errors import bad_request
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
    Navigation,
    Property,
)
from emulator.odata.store import etag_for, quote_ident

# --- rows out: SQL that makes SQLite emit the JSON ------------------------------------------------------


def value_sql(prop: Property, alias: str) -> str:
    column = f"{alias}.{quote_ident(prop.name)}"
    if prop.edm_type == EDM_BOOLEAN:  # stored 0/1, sent as JSON true/false
        return f"CASE WHEN {column} IS NULL THEN NULL WHEN {column} THEN json('true') ELSE json('false') END"
    return column


def row_json_sql(
    entity: EntityType,
    alias: str,
    select: Sequence[str] | None = None,
    expands: Iterable[tuple[str, str]] = (),
) -> str:
    """``json_object(...)`` for one row: ``@odata.etag``, then the (selected) properties in declared order,
    then expanded navigations given as (name, SQL expression)."""
    wanted = None if select is None else set(select)
    parts: list[str] = []
    if entity.etag:
        parts.append(f'\'@odata.etag\', odata_etag({alias}."_RecVersion", {alias}."_RecId")')
    for prop in entity.properties:
        if wanted is None or prop.name in wanted:
            parts.append(f"'{prop.name}', {value_sql(prop, alias)}")
    for name, sql in expands:
        parts.append(f"'{name}', {sql}")
    return f"json_object({', '.join(parts)})"


def expand_sql(
    nav: Navigation, catalog: Catalog, alias: str, sub_alias: str, select: Sequence[str] | None
) -> str:
    """The nested JSON of one first-level navigation: an array for collections, else an object or null."""
    target = catalog.entities[nav.target_set]
    table = quote_ident(target.set_name)
    join = " AND ".join(
        f"{sub_alias}.{quote_ident(remote)} = {alias}.{quote_ident(local)}" for local, remote in nav.on
    )
    inner = row_json_sql(target, sub_alias, select)
    if nav.collection:
        order = ", ".join(f"{sub_alias}.{quote_ident(k)}" for k in target.keys)
        return (
            f"json((SELECT json_group_array(json(j)) FROM (SELECT {inner} AS j FROM {table} AS {sub_alias} "
            f"WHERE {join} ORDER BY {order})))"
        )
    return f"json((SELECT {inner} FROM {table} AS {sub_alias} WHERE {join} LIMIT 1))"


def storage_to_json(prop: Property, value: Any) -> Any:
    """One stored value as it appears in a JSON payload."""
    if value is None:
        return None
    if prop.edm_type == EDM_BOOLEAN:
        return bool(value)
    return value


# --- payloads in: JSON values checked and converted to storage ---------------------------------------------

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _cannot_convert(value: Any, edm_type: str) -> Exception:
    text = value if isinstance(value, str) else repr(value)
    return bad_request(f"Cannot convert the literal '{text}' to the expected type '{edm_type}'.")


def json_to_storage(prop: Property, value: Any, *, owner: str = "") -> Any:
    """Validate one payload value against its property and return the storage form (raises 400)."""
    type_name = prop.enum_type.qualified_name if prop.enum_type is not None else prop.edm_type
    if value is None:
        if not prop.nullable:
            where = f" of type '{owner}'" if owner else ""
            raise bad_request(
                f"A null value was found for the property named '{prop.name}'{where}, "
                "which has the expected type that does not allow null values."
            )
        return None
    edm = prop.edm_type
    if edm == EDM_STRING:
        if not isinstance(value, str):
            raise _cannot_convert(value, edm)
        if prop.max_length is not None and len(value) > prop.max_length:
            # UNCONFIRMED whether F&O truncates or refuses; refusing surfaces the bug before production does
            raise bad_request(
                f"The value of property '{prop.name}' is {len(value)} characters long; "
                f"the field holds at most {prop.max_length}."
            )
        return value
    if edm in (EDM_INT32, EDM_INT64):
        low, high = _INT32 if edm == EDM_INT32 else _INT64
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _cannot_convert(value, edm)
        return value
    if edm == EDM_DECIMAL:
        if isinstance(value, str):  # IEEE754Compatible=true clients send decimals as strings
            try:
                value = float(value)
            except ValueError:
                raise _cannot_convert(value, edm) from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _cannot_convert(value, edm)
        try:
            number = float(value)  # a JSON integer too large for a decimal: OverflowError
        except OverflowError:
            raise _cannot_convert(value, edm) from None
        if not math.isfinite(number):
            raise _cannot_convert(value, edm)
        return number
    if edm == EDM_BOOLEAN:
        if not isinstance(value, bool):
            raise _cannot_convert(value, edm)
        return 1 if value else 0
    if edm == EDM_DATETIMEOFFSET:
        if not isinstance(value, str):
            raise _cannot_convert(value, edm)
        return normalize_datetime(value)
    if edm == EDM_DATE:
        if not isinstance(value, str) or not _DATE.match(value):
            raise _cannot_convert(value, edm)
        return value
    if edm == EDM_GUID:
        try:
            return str(uuid.UUID(str(value))).lower()
        except ValueError:
            raise _cannot_convert(value, edm) from None
    if edm == EDM_ENUM and prop.enum_type is not None:
        member = enum_member(prop, value)
        if member is None:
            raise bad_request(f"The value '{value}' is not a valid member of the enumeration '{type_name}'.")
        return member
    return value


def enum_member(prop: Property, value: Any) -> str | None:
    """The symbol for a payload enum value: the symbol itself (any case) or its integer value."""
    assert prop.enum_type is not None
    members = prop.enum_type.members
    if isinstance(value, int) and not isinstance(value, bool):
        return members[value] if 0 <= value < len(members) else None
    if not isinstance(value, str):
        return None
    for member in members:
        if member.lower() == value.lower():
            return member
    if value.isdigit() and int(value) < len(members):
        return members[int(value)]
    return None


def normalize_datetime(text: str) -> str:
    """ISO-8601 with an offset -> ``YYYY-MM-DDTHH:MM:SSZ`` in UTC (F&O keeps whole seconds)."""
    if not _DATETIME.match(text):
        raise _cannot_convert(text, EDM_DATETIMEOFFSET)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _cannot_convert(text, EDM_DATETIMEOFFSET) from None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- keys and ETags ----------------------------------------------------------------------------------------


def key_literal(prop: Property | None, value: Any) -> str:
    if isinstance(value, str) and (prop is None or prop.edm_type in (EDM_STRING, EDM_ENUM)):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def key_segment(entity: EntityType, row: Mapping[str, Any]) -> str:
    """Canonical URL segment, percent-encoded: ``CustomersV3(dataAreaId='usmf',CustomerAccount='US-001')``."""
    if len(entity.keys) == 1:
        inner = key_literal(entity.property(entity.keys[0]), row[entity.keys[0]])
    else:
        inner = ",".join(f"{k}={key_literal(entity.property(k), row[k])}" for k in entity.keys)
    return f"{entity.set_name}({quote(inner, safe=chr(39) + '=,:-._~')})"


def etag_matches(if_match: str, rec_version: int, rec_id: int) -> bool:
    """``If-Match``: ``*`` or a list of entity tags; weak and strong forms of our tag both match."""
    if if_match.strip() == "*":
        return True
    current = etag_for(rec_version, rec_id)
    opaque = current[2:]  # '"<base64>"'
    for tag in _split_tags(if_match):
        candidate = tag[2:] if tag.startswith("W/") else tag
        if candidate == opaque:
            return True
    return False


def _split_tags(header: str) -> list[str]:
    tags: list[str] = []
    for match in re.finditer(r'(W/)?"[^"]*"|[^,\s]+', header):
        tags.append(match.group(0))
    return tags
