"""Record values to a custom service operation's parameter types, read from the operation's description.

D365 describes an operation at ``GET /api/services/{group}/{service}/{operation}`` (ref §6, a shape seen by
third-party tools: ``{"Parameters": [{"Name", "Type"}], "Return": {...}}``). ``ServiceDescriptions`` keeps
the parameter types per operation and D365 environment for a while (``POPULATE_METADATA_CACHE_MINUTES``,
like ``$metadata``) and for a bounded number of operations.

Conversion (``to_parameter``) by X++ type: ``int``/``int64`` whole numbers in range, ``real`` numbers ('.'
decimals), ``boolean`` true/false/yes/no/1/0, ``date`` ``YYYY-MM-DD``, ``utcdatetime`` ISO 8601 (no offset =
UTC) sent as ``...Z``, ``guid``, ``str``. Any other type is an enum, a data contract or an extended data
type the description does not resolve: JSON values pass through as read, and a CSV cell is sent as its text
(an enum's symbol) unless it holds a JSON object; ``List<T>`` takes a JSON array (from CSV, as JSON text).
An empty CSV cell is ``null`` for a typed primitive (X++ leaves its default) and ``""`` for text.

The description is UNCONFIRMED (ref §6: third-party shape; the type names D365 uses for primitives are not
documented, so .NET spellings such as ``Int32`` or ``System.String`` are accepted too). When it cannot be had
(404/405, not JSON, no ``Parameters`` list) the operation is called with the values as read, as before types
were known: the custom service's own binding then decides, and its error is the record's error.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from shared.d365.errors import (
    D365ConnectionError,
    D365Error,
    D365HTTPError,
    D365ServerError,
    D365ThrottledError,
    D365TimeoutError,
)
from shared.d365.services import CustomServiceClient
from shared.populate.config import ServiceTarget
from shared.populate.convert import date_text, utc_text

__all__ = ["SERVICE_DESCRIPTIONS", "ParameterError", "ParameterTypes", "ServiceDescriptions", "to_parameter"]

log = logging.getLogger(__name__)
MAX_OPERATIONS = 256

# ref §6 UNCONFIRMED: X++ names as the emulator and the third-party capture show them, plus .NET spellings
_PRIMITIVES = {
    "str": "str", "string": "str", "system.string": "str",
    "int": "int", "integer": "int", "int32": "int", "system.int32": "int",
    "int64": "int64", "long": "int64", "system.int64": "int64",
    "real": "real", "decimal": "real", "double": "real", "system.decimal": "real", "system.double": "real",
    "boolean": "boolean", "bool": "boolean", "system.boolean": "boolean",
    "date": "date",
    "utcdatetime": "utcdatetime", "datetime": "utcdatetime", "system.datetime": "utcdatetime",
    "guid": "guid", "system.guid": "guid",
    "anytype": "anytype", "object": "anytype", "system.object": "anytype",
}  # fmt: skip
_RANGES = {"int": 2**31, "int64": 2**63}
_LIST = re.compile(r"^\s*(?:List|System\.Collections\.Generic\.List`1)\s*[<\[](?P<item>.+)[>\]]\s*$", re.I)
_TRUE = {"true", "yes", "y", "1"}
_FALSE = {"false", "no", "n", "0"}


class ParameterError(ValueError):
    """A value that does not fit its parameter's type; the message says what was expected."""


@dataclass(frozen=True)
class ParameterTypes:
    """The X++ type of each parameter of one operation (names compared without regard to case)."""

    types: Mapping[str, str]  # lower-case name -> type as described

    def of(self, parameter: str) -> str | None:
        return self.types.get(parameter.lower())


def to_parameter(type_name: str, value: Any, *, from_text: bool) -> Any:
    """The JSON value to send for ``value`` as X++ type ``type_name``; raises ParameterError."""
    if value is None:
        return None
    if _LIST.match(type_name):
        if from_text and isinstance(value, str):
            value = _json_text(value, "a JSON array") if value.strip() else None
        if value is not None and not isinstance(value, list):
            raise ParameterError(f"{_shown(value)} is not a list ({type_name}: give a JSON array)")
        return value
    kind = _PRIMITIVES.get(type_name.strip().lower())
    if kind is None:  # an enum, a data contract or an EDT: D365 binds it
        if from_text and isinstance(value, str) and value.lstrip().startswith("{"):
            return _json_text(value, "a JSON object (a data contract)")
        return value
    if kind == "anytype":
        return value
    if from_text and isinstance(value, str) and not value.strip() and kind != "str":
        return None  # an empty cell: X++ keeps the parameter's default
    try:
        return _CONVERTERS[kind](kind, value)
    except (ValueError, TypeError, ArithmeticError):
        raise ParameterError(f"{_shown(value)} is not {_EXPECTED[kind]}") from None


def _shown(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _json_text(text: str, expected: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ParameterError(f"{_shown(text)} is not {expected}") from None


def _text(kind: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise TypeError(value)
    return str(value)


def _whole(kind: str, value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
        number = int(value)
    else:
        raise ValueError(value)
    if not -_RANGES[kind] <= number < _RANGES[kind]:
        raise ValueError(value)
    return number


def _real(kind: str, value: Any) -> int | float:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise TypeError(value)
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(str(value))
    except InvalidOperation:
        raise ValueError(value) from None
    if not number.is_finite():
        raise ValueError(value)
    return int(number) if number == number.to_integral_value() else float(number)


def _boolean(kind: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if not isinstance(value, str | int):
        raise TypeError(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(value)


_CONVERTERS: dict[str, Callable[[str, Any], Any]] = {
    "str": _text,
    "int": _whole,
    "int64": _whole,
    "real": _real,
    "boolean": _boolean,
    "date": lambda kind, value: date_text(value),
    "utcdatetime": lambda kind, value: utc_text(value),
    "guid": lambda kind, value: str(uuid.UUID(value.strip())) if isinstance(value, str) else _no(value),
}
_EXPECTED = {
    "str": "text",
    "int": "a whole number (int)",
    "int64": "a whole number (int64)",
    "real": "a number (real; use '.' as the decimal separator)",
    "boolean": "true or false (boolean)",
    "date": "a date (date, YYYY-MM-DD)",
    "utcdatetime": "a date-time (utcdatetime, ISO 8601, e.g. 2024-05-01T08:30:00Z)",
    "guid": "a GUID (guid)",
}


def _no(value: Any) -> Any:
    raise TypeError(value)


class ServiceDescriptions:
    """Parameter types per operation and D365 environment, fetched when missing or older than
    ``ttl_seconds``; at most ``max_operations`` kept (the least recently fetched are dropped). Thread-safe.

    ``None`` for an operation whose description is unavailable (cached too, so a D365 without the listing is
    asked once per period); a transient failure (5xx, throttled, no connection) is not cached.
    """

    def __init__(
        self,
        ttl_seconds: float = 3600.0,
        *,
        max_operations: int = MAX_OPERATIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_operations = max_operations
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[str, ...], tuple[float, ParameterTypes | None]] = OrderedDict()
        self.downloads = 0

    def __len__(self) -> int:
        return len(self._entries)

    def parameters(self, client: CustomServiceClient, target: ServiceTarget) -> ParameterTypes | None:
        base = client.transport.base_url.rstrip("/").lower()
        key = (base, target.service_group.lower(), target.service.lower(), target.operation.lower())
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None and self._clock() - cached[0] < self.ttl_seconds:
                return cached[1]
            self.downloads += 1
            try:
                found = _describe(client, target)
            except _Transient as exc:
                log.warning(
                    "custom service %s: no description now (%s); values sent as read", target.name, exc
                )
                return None
            self._entries[key] = (self._clock(), found)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_operations:
                self._entries.popitem(last=False)
            return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class _Transient(Exception):
    pass


def _describe(client: CustomServiceClient, target: ServiceTarget) -> ParameterTypes | None:
    try:
        described = client.describe(target.service_group, target.service, target.operation)
    except (D365ServerError, D365ThrottledError) as exc:
        raise _Transient(str(exc)) from exc
    except D365HTTPError as exc:  # 404/405/400: this D365 does not describe operations (UNCONFIRMED, ref §6)
        log.info("custom service %s is not described (%s); values sent as read", target.name, exc)
        return None
    except (D365ConnectionError, D365TimeoutError) as exc:
        raise _Transient(str(exc)) from exc
    except D365Error as exc:  # an answer that is not JSON
        log.info("custom service %s: unreadable description (%s); values sent as read", target.name, exc)
        return None
    raw = described.raw
    if not isinstance(raw, dict) or not any(str(k).lower() == "parameters" for k in raw):
        log.info("custom service %s: description without 'Parameters'; values sent as read", target.name)
        return None
    return ParameterTypes({p.name.lower(): p.type for p in described.parameters if p.type})


#: One cache per process: an operation's signature is the same for every caller of an environment.
SERVICE_DESCRIPTIONS = ServiceDescriptions()
