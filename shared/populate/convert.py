"""Record values to the OData JSON form of the entity's types (from ``$metadata``), and back for comparing.

CSV cells arrive as text, JSON values as JSON; both are converted by the property's Edm type, and a value
that does not fit is a ``ConversionError`` naming the field, the value and what was expected, so the
status record says exactly which cell to fix. Rules:

- an empty CSV cell leaves a non-text field out of the write (D365 keeps or defaults it); for a text field
  it is the empty string;
- enums: the symbol in any case (``yes`` → ``Yes``) or its number; sent as the symbol;
- dates: ``YYYY-MM-DD``; date-times: ISO 8601 (``Z`` or an offset; a value without one is taken as UTC,
  which is what D365 stores), sent as ``YYYY-MM-DDTHH:MM:SSZ``;
- booleans: true/false, yes/no, 1/0; numbers: ``.`` as the decimal separator, no thousands separators.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.populate.metadata import PropertyModel

__all__ = ["OMIT", "ConversionError", "date_text", "same_value", "to_wire", "utc_text"]

OMIT = object()  # the value leaves the field out of the write
_INT_RANGES = {"Edm.Int16": 2**15, "Edm.Int32": 2**31, "Edm.Int64": 2**63, "Edm.Byte": 256}
_DECIMALS = ("Edm.Decimal", "Edm.Double", "Edm.Single")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ConversionError(ValueError):
    """A value that does not fit its field's type; the message is meant for the status record."""


def _fail(prop: PropertyModel, value: Any, expected: str) -> ConversionError:
    shown = value if isinstance(value, str) else repr(value)
    return ConversionError(f"field {prop.name!r}: {shown!r} is not {expected}")


def to_wire(prop: PropertyModel, value: Any, *, from_text: bool) -> Any:
    """The JSON value to send for ``value`` (``OMIT`` to leave the field out); raises ConversionError."""
    if value is None:
        if not prop.nullable:
            raise ConversionError(f"field {prop.name!r} cannot be empty (null)")
        return None
    if from_text and isinstance(value, str) and value == "" and prop.edm_type != "Edm.String":
        return OMIT
    if prop.enum_members is not None:
        return _enum(prop, value)
    edm = prop.edm_type
    if edm == "Edm.String":
        text = value if isinstance(value, str) else _scalar_text(prop, value)
        if prop.max_length is not None and len(text) > prop.max_length:
            raise ConversionError(
                f"field {prop.name!r}: {len(text)} characters, at most {prop.max_length} fit"
            )
        return text
    if edm in _INT_RANGES:
        return _integer(prop, value)
    if edm in _DECIMALS:
        return _decimal(prop, value)
    if edm == "Edm.Boolean":
        return _boolean(prop, value)
    if edm == "Edm.Date":
        return _date(prop, value)
    if edm == "Edm.DateTimeOffset":
        return _datetime(prop, value)
    if edm == "Edm.Guid":
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise _fail(prop, value, "a GUID") from None
    return value  # another Edm type: sent as given


def _scalar_text(prop: PropertyModel, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(prop, value, "text")
    return str(value)


def _enum(prop: PropertyModel, value: Any) -> str:
    members = prop.enum_members or ()
    if isinstance(value, str):
        text = value.strip()
        for symbol, _ in members:
            if symbol.lower() == text.lower():
                return symbol
        if text.lstrip("-").isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool):
        for symbol, number in members:
            if number == value:
                return symbol
    allowed = ", ".join(symbol for symbol, _ in members)
    raise _fail(prop, value, f"a value of enum {prop.edm_type.rsplit('.', 1)[-1]} ({allowed})")


def _integer(prop: PropertyModel, value: Any) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif (isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value)) or (
        isinstance(value, float) and value.is_integer()
    ):
        number = int(value)
    bound = _INT_RANGES[prop.edm_type]
    low, high = (0, bound - 1) if prop.edm_type == "Edm.Byte" else (-bound, bound - 1)
    if number is None or not low <= number <= high:
        raise _fail(prop, value, f"a whole number ({prop.edm_type})")
    return number


def _decimal(prop: PropertyModel, value: Any) -> int | float:
    if isinstance(value, bool):
        raise _fail(prop, value, "a number")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _fail(prop, value, "a number (use '.' as the decimal separator)") from None
    if not number.is_finite():
        raise _fail(prop, value, "a finite number")
    return int(number) if number == number.to_integral_value() else float(number)


def _boolean(prop: PropertyModel, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _fail(prop, value, "true or false")


def date_text(value: Any) -> str:
    """``YYYY-MM-DD`` (a date-time gives its date); ValueError when ``value`` is not one."""
    text = str(value).strip() if isinstance(value, str) else None
    if text and len(text) > 10 and text[10] in "T ":
        text = text[:10]  # a date-time for a date field: its date
    if text is None or not _DATE.match(text):
        raise ValueError(value)
    date.fromisoformat(text)
    return text


def utc_text(value: Any) -> str:
    """ISO 8601 (no offset = UTC) as ``YYYY-MM-DDTHH:MM:SSZ``; ValueError when ``value`` is not one."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    text = value.strip()
    parsed = (
        datetime.fromisoformat(text + "T00:00:00")
        if _DATE.match(text)
        else datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(prop: PropertyModel, value: Any) -> str:
    try:
        return date_text(value)
    except ValueError:
        raise _fail(prop, value, "a date (YYYY-MM-DD)") from None


def _datetime(prop: PropertyModel, value: Any) -> str:
    try:
        return utc_text(value)
    except ValueError:
        if not isinstance(value, str) or not value.strip():
            raise _fail(prop, value, "a date-time (ISO 8601)") from None
        raise _fail(prop, value, "a date-time (ISO 8601, e.g. 2024-05-01T08:30:00Z)") from None


def same_value(prop: PropertyModel, current: Any, wanted: Any) -> bool:
    """Whether the stored ``current`` (as D365 sent it) already equals the converted ``wanted``."""
    if bool(current == wanted):
        return True
    if current is None or wanted is None:
        return current in (None, "") and wanted in (None, "")
    if prop.enum_members is not None:
        return bool(str(current).lower() == str(wanted).lower())
    if prop.edm_type in _DECIMALS or prop.edm_type in _INT_RANGES:
        try:
            return math.isclose(float(current), float(wanted), rel_tol=0, abs_tol=1e-9)
        except (TypeError, ValueError):
            return False
    if prop.edm_type == "Edm.DateTimeOffset" and isinstance(current, str):
        try:
            return bool(_datetime(prop, current) == wanted)
        except ConversionError:
            return False
    if prop.edm_type == "Edm.Date" and isinstance(current, str):
        return bool(current[:10] == wanted)
    if prop.edm_type == "Edm.Guid":
        return str(current).lower() == str(wanted).lower()
    return False
