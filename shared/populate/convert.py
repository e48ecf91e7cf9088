"""Record values to the OData JSON form of the entity's types (from ``$metadata``), and back for comparing.

CSV cells arrive as text, JSON values as JSON; both are converted by the property's Edm type, and a value
that does not fit is a ``ConversionError`` naming the field, the value and what was expected, so the
status record says exactly which cell to fix. Rules:

- an empty CSV cell leaves a non-text field out of the write (D365 keeps or defaults it); for a text field
  it is the empty string;
- enums: the symbol in any case (``yes`` → ``Yes``) or its number; sent as the symbol; a ``NoYes``-like
  enum (members No and Yes) also takes true/false;
- dates: ``YYYY-MM-DD``; date-times: ISO 8601 with ``Z`` or an offset, sent as ``YYYY-MM-DDTHH:MM:SSZ``. A
  date-time without an offset is refused (guessing UTC would shift a local time by hours), except a plain
  date: D365 shows a date-only value as that date at 12:00:00 UTC (ref §1.1), so ``2019-10-04`` is sent as
  ``2019-10-04T12:00:00Z`` and compared with what D365 holds by its date only (``is_date_only``);
- booleans: true/false, yes/no, 1/0; numbers: ``.`` as the decimal separator, no thousands separators
  (nor ``_``); JSON numbers are read as exact decimals, and a value a JSON number cannot carry exactly
  (more than 15 significant digits after the point, or beyond 10^28) is refused rather than rounded.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.populate.metadata import PropertyModel

__all__ = [
    "OMIT",
    "ConversionError",
    "date_text",
    "is_date_only",
    "key_literal",
    "same_value",
    "shown",
    "to_wire",
    "utc_text",
]

OMIT = object()  # the value leaves the field out of the write
_INT_RANGES = {"Edm.Int16": 2**15, "Edm.Int32": 2**31, "Edm.Int64": 2**63, "Edm.Byte": 256}
_DECIMALS = ("Edm.Decimal", "Edm.Double", "Edm.Single")
_TRUE = {"true", "yes", "1", "y"}
_FALSE = {"false", "no", "0", "n"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
_DECIMAL_LIMIT = Decimal(10) ** 28  # D365 reals hold 28 digits before the point at most
DATE_ONLY_TIME = "T12:00:00Z"  # ref §1.1: a date-only value reads back as that date at noon UTC


class ConversionError(ValueError):
    """A value that does not fit its field's type; the message is meant for the status record."""


def shown(value: Any) -> str:
    """``value`` as its sender wrote it: text quoted, other values as JSON (``true``, ``null``, ``1.5``)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Decimal):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _fail(prop: PropertyModel, value: Any, expected: str) -> ConversionError:
    return ConversionError(f"field {prop.name!r}: {shown(value)} is not {expected}")


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
    return float(value) if isinstance(value, Decimal) else value  # another Edm type: sent as given


def _scalar_text(prop: PropertyModel, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _fail(prop, value, "text")
    return str(value)


def _no_yes(members: tuple[tuple[str, int], ...]) -> dict[bool, str] | None:
    """True/False for an enum of exactly the members No and Yes (D365's NoYes and its look-alikes)."""
    by_name = {symbol.lower(): symbol for symbol, _ in members}
    if len(members) == 2 and set(by_name) == {"no", "yes"}:
        return {False: by_name["no"], True: by_name["yes"]}
    return None


def _enum(prop: PropertyModel, value: Any) -> str:
    members = prop.enum_members or ()
    no_yes = _no_yes(members)
    if isinstance(value, bool) and no_yes is not None:
        return no_yes[value]
    if isinstance(value, str):
        text = value.strip()
        for symbol, _ in members:
            if symbol.lower() == text.lower():
                return symbol
        if no_yes is not None and text.lower() in ("true", "false"):
            return no_yes[text.lower() == "true"]
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
        isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value)
    ):
        number = int(value)
    bound = _INT_RANGES[prop.edm_type]
    low, high = (0, bound - 1) if prop.edm_type == "Edm.Byte" else (-bound, bound - 1)
    if number is None or not low <= number <= high:
        raise _fail(prop, value, f"a whole number ({prop.edm_type})")
    return number


def _decimal(prop: PropertyModel, value: Any) -> int | float:
    """An exact JSON number: an int, or a float whose shortest text is the value's own digits."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise _fail(prop, value, "a number")
    if isinstance(value, str) and not _NUMBER.match(value.strip()):
        raise _fail(prop, value, "a number (use '.' as the decimal separator, no thousands separators)")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise _fail(prop, value, "a number (use '.' as the decimal separator)") from None
    if not number.is_finite():
        raise _fail(prop, value, "a finite number")
    if abs(number) >= _DECIMAL_LIMIT:
        raise _fail(prop, value, "a number D365 can hold (less than 10^28)")
    if number == number.to_integral_value():
        return int(number)
    approximate = float(number)
    if Decimal(repr(approximate)) != number:
        raise _fail(prop, value, "a number JSON carries exactly (at most 15 significant digits)")
    return approximate


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


class NaiveDateTime(ValueError):
    """A date-time with a time of day but no offset."""


def is_date_only(value: Any) -> bool:
    """Whether ``value`` is a plain ``YYYY-MM-DD`` text (a date for a date-time field)."""
    return isinstance(value, str) and bool(_DATE.match(value.strip()))


def _iso(moment: datetime) -> str:
    # not strftime: %Y drops the zero padding of years before 1000 on some platforms
    return (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}T"
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z"
    )


def parse_utc(value: Any) -> datetime:
    """ISO 8601 with ``Z`` or an offset (a plain date: noon UTC) as an aware UTC datetime; ValueError when
    ``value`` is not one, ``NaiveDateTime`` for a time without an offset."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(value)
    text = value.strip()
    if _DATE.match(text):
        return datetime.fromisoformat(text + DATE_ONLY_TIME.replace("Z", "+00:00"))
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise NaiveDateTime(value)
    return parsed.astimezone(UTC)


def utc_text(value: Any) -> str:
    """``value`` (see ``parse_utc``) as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return _iso(parse_utc(value))


def _date(prop: PropertyModel, value: Any) -> str:
    try:
        return date_text(value)
    except ValueError:
        raise _fail(prop, value, "a date (YYYY-MM-DD)") from None


def _datetime(prop: PropertyModel, value: Any) -> str:
    try:
        return utc_text(value)
    except NaiveDateTime:
        raise _fail(
            prop,
            value,
            "a date-time with its offset (add Z for UTC or e.g. +02:00: without one the "
            "time could be taken hours wrong)",
        ) from None
    except ValueError:
        if not isinstance(value, str) or not value.strip():
            raise _fail(prop, value, "a date-time (ISO 8601)") from None
        raise _fail(prop, value, "a date-time (ISO 8601, e.g. 2024-05-01T08:30:00Z)") from None


def same_value(prop: PropertyModel, current: Any, wanted: Any, *, date_only: bool = False) -> bool:
    """Whether the stored ``current`` (as D365 sent it) already equals the converted ``wanted``;
    ``date_only``: the input was a plain date for a date-time field, compared by its date."""
    if bool(current == wanted) and not isinstance(current, bool) and not isinstance(wanted, bool):
        return True
    if current is None or wanted is None:
        return current in (None, "") and wanted in (None, "")
    if prop.enum_members is not None:
        return bool(str(current).lower() == str(wanted).lower())
    if prop.edm_type in _DECIMALS or prop.edm_type in _INT_RANGES:
        if isinstance(current, bool) or isinstance(wanted, bool):
            return False
        try:
            return Decimal(str(current)) == Decimal(str(wanted))
        except (InvalidOperation, ValueError):
            return False
    if prop.edm_type == "Edm.DateTimeOffset" and isinstance(current, str):
        try:
            stored = parse_utc(current)
            if date_only:
                return stored.date() == parse_utc(wanted).date()
            return bool(_iso(stored) == wanted)
        except ValueError:
            return False
    if prop.edm_type == "Edm.Date" and isinstance(current, str):
        return bool(current[:10] == wanted)
    if prop.edm_type == "Edm.Guid":
        return str(current).lower() == str(wanted).lower()
    if prop.edm_type == "Edm.Boolean":
        return current is wanted
    return bool(current == wanted)


def key_literal(prop: PropertyModel, value: Any) -> Any:
    """A converted key value as the Python value whose OData literal D365 expects in a key segment
    (``format_key``): date-times and GUIDs unquoted, numbers as numbers, text quoted."""
    if prop.enum_members is not None or not isinstance(value, str):
        return value
    edm = prop.edm_type
    if edm == "Edm.DateTimeOffset":
        return parse_utc(value)
    if edm == "Edm.Date":
        return date.fromisoformat(value)
    if edm == "Edm.Guid":
        return uuid.UUID(value)
    return value
