"""Pure OData URL building for D365 F&O: literals, entity keys, a filter builder and query options.

Nothing here does I/O; every mistake a caller can make is raised as ``ODataQueryError`` before a request
is sent, so a typo never becomes a confusing 400 from D365 (or, worse, a silently wrong filter).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Final
from urllib.parse import quote

from shared.d365.errors import ODataQueryError

__all__ = [
    "ENUM_NAMESPACE",
    "Enum",
    "F",
    "Field",
    "Filter",
    "Query",
    "action_path",
    "encode_query",
    "entity_path",
    "format_key",
    "format_literal",
    "raw",
]

ENUM_NAMESPACE: Final = "Microsoft.Dynamics.DataEntities"  # also the namespace of bound actions

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_QUALIFIED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_PROPERTY_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Characters kept verbatim in a key path segment; everything else (space / # ? % + & ...) is escaped.
_KEY_SAFE: Final = "'(),=:-._~"
# Characters kept verbatim in query-string names/values; spaces become %20 (as Microsoft's samples send).
_QUERY_SAFE: Final = "$'(),:*/@-._~"


def _identifier(name: object, what: str, pattern: re.Pattern[str] = _IDENT) -> str:
    if not isinstance(name, str) or not pattern.match(name):
        raise ODataQueryError(f"invalid {what} {name!r}: expected a plain OData identifier")
    return name


@dataclass(frozen=True)
class Enum:
    """A D365 enum value for URLs: ``Enum("NoYes", "Yes")`` → ``Microsoft.Dynamics.DataEntities.NoYes'Yes'``.

    D365 needs the namespace-qualified literal in URLs (ref §1.3); in JSON bodies enums are plain strings.
    ``enum_type`` may already be qualified (any dotted name is used as given).
    """

    enum_type: str
    member: str

    def __post_init__(self) -> None:
        _identifier(self.enum_type, "enum type name", _QUALIFIED)
        _identifier(self.member, "enum member name")

    @property
    def literal(self) -> str:
        qualified = self.enum_type if "." in self.enum_type else f"{ENUM_NAMESPACE}.{self.enum_type}"
        return f"{qualified}'{self.member}'"


def format_literal(value: object) -> str:
    """Format a Python value as an OData v4 URL literal (filters and keys).

    Naive datetimes are rejected rather than assumed to be UTC: D365 stores UTC, and guessing would shift
    a local time silently by hours. Pass an aware datetime (``datetime(..., tzinfo=UTC)``) instead.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, Enum):
        return value.literal
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ODataQueryError(f"cannot send the non-finite number {value!r} to D365")
        return repr(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ODataQueryError(f"cannot send the non-finite number {value!r} to D365")
        return format(value, "f")
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ODataQueryError(
                f"naive datetime {value.isoformat()} is ambiguous: give it a timezone (e.g. tzinfo=UTC)"
            )
        utc = value.astimezone(UTC)
        text = utc.replace(tzinfo=None, microsecond=0).isoformat()
        if utc.microsecond:
            text += f".{utc.microsecond:06d}".rstrip("0")
        return text + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    raise ODataQueryError(
        f"cannot format {type(value).__name__} value {value!r} as an OData literal "
        "(supported: str, bool, int, float, Decimal, aware datetime, date, UUID, Enum, None)"
    )


def format_key(key: object) -> str:
    """The key segment of an entity URL, encoded for a path: ``(dataAreaId='usmf',CustomerAccount='US-001')``.

    A mapping gives a named (composite) key in the given order; a scalar gives ``('USMF')``. Quotes stay
    literal (valid in a path); ``/ # ? % +`` and spaces in values are escaped so they cannot break the URL.
    """
    if isinstance(key, Mapping):
        if not key:
            raise ODataQueryError("empty entity key: D365 needs every key field")
        parts = []
        for name, value in key.items():
            _identifier(name, "key field name")
            if value is None:
                raise ODataQueryError(f"key field {name!r} is None: key values cannot be null")
            parts.append(f"{name}={format_literal(value)}")
        text = "(" + ",".join(parts) + ")"
    else:
        if key is None or key == "":
            raise ODataQueryError("empty entity key")
        text = f"({format_literal(key)})"
    return quote(text, safe=_KEY_SAFE)


def entity_path(entity_set: str, key: object = None) -> str:
    """``/data/{EntitySet}`` or ``/data/{EntitySet}({key})``, validated and encoded."""
    _identifier(entity_set, "entity set name")
    return f"/data/{entity_set}" + ("" if key is None else format_key(key))


def action_path(entity_set: str, name: str, key: object = None) -> str:
    """``/data/{Set}[({key})]/Microsoft.Dynamics.DataEntities.{name}`` for a bound action (ref §1.1)."""
    short = name.removeprefix(ENUM_NAMESPACE + ".")
    _identifier(short, "action name")
    return f"{entity_path(entity_set, key)}/{ENUM_NAMESPACE}.{short}"


class Filter:
    """A built ``$filter`` expression; combine with ``&`` (and), ``|`` (or) and ``~`` (not)."""

    __slots__ = ("_kind", "text")

    def __init__(self, text: str, kind: str = "atom") -> None:
        self.text = text
        self._kind = kind  # "atom", "and" or "or": decides where parentheses are needed

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Filter({self.text!r})"

    def __and__(self, other: Filter | str) -> Filter:
        return Filter(f"{self._wrap('and')} and {_as_filter(other)._wrap('and')}", "and")

    def __or__(self, other: Filter | str) -> Filter:
        return Filter(f"{self._wrap('or')} or {_as_filter(other)._wrap('or')}", "or")

    def __rand__(self, other: str) -> Filter:
        return _as_filter(other) & self

    def __ror__(self, other: str) -> Filter:
        return _as_filter(other) | self

    def __invert__(self) -> Filter:
        return Filter(f"not ({self.text})")

    def _wrap(self, parent: str) -> str:
        return self.text if self._kind in ("atom", parent) else f"({self.text})"

    def __bool__(self) -> bool:
        raise ODataQueryError("use & | ~ to combine filters, not 'and' / 'or' / 'not'")


def raw(text: str) -> Filter:
    """A hand-written filter for what the builder cannot express; it is parenthesised when combined."""
    if not isinstance(text, str) or not text.strip():
        raise ODataQueryError("a raw filter must be a non-empty string")
    return Filter(text, "raw")


def _as_filter(value: Filter | str) -> Filter:
    if isinstance(value, Filter):
        return value
    if isinstance(value, str):
        return raw(value)
    raise ODataQueryError(f"cannot combine a filter with {type(value).__name__}")


class Field:
    """A property (or ``Navigation/Property`` path) to compare: ``F("CustomerGroupId") == "10"``."""

    __slots__ = ("name",)
    __hash__ = None  # type: ignore[assignment]  # == builds a Filter, so a Field is not hashable

    def __init__(self, name: str) -> None:
        self.name = _identifier(name, "property name", _PROPERTY_PATH)

    def __repr__(self) -> str:
        return f"F({self.name!r})"

    def _compare(self, op: str, value: object) -> Filter:
        if isinstance(value, Enum) and op not in ("eq", "ne"):
            raise ODataQueryError(f"D365 supports only eq/ne on enums, not {op} ({self.name})")
        if isinstance(value, str) and "*" in value and op in ("eq", "ne"):
            raise ODataQueryError(
                f"'*' in {value!r} would act as a D365 wildcard in {op}; use .like() for a pattern "
                "(a literal '*' cannot be matched)"
            )
        operand = value.name if isinstance(value, Field) else format_literal(value)
        return Filter(f"{self.name} {op} {operand}")

    def __eq__(self, value: object) -> Filter:  # type: ignore[override]
        return self._compare("eq", value)

    def __ne__(self, value: object) -> Filter:  # type: ignore[override]
        return self._compare("ne", value)

    def __lt__(self, value: object) -> Filter:
        return self._compare("lt", value)

    def __le__(self, value: object) -> Filter:
        return self._compare("le", value)

    def __gt__(self, value: object) -> Filter:
        return self._compare("gt", value)

    def __ge__(self, value: object) -> Filter:
        return self._compare("ge", value)

    def is_null(self) -> Filter:
        return Filter(f"{self.name} eq null")

    def is_not_null(self) -> Filter:
        return Filter(f"{self.name} ne null")

    def like(self, pattern: str) -> Filter:
        """D365's wildcard match: ``eq 'pattern'`` where ``*`` is any text (ref §1.3)."""
        if not isinstance(pattern, str) or not pattern:
            raise ODataQueryError(f"like() on {self.name} needs a non-empty string pattern")
        return Filter(f"{self.name} eq {format_literal(pattern)}")

    def _wildcard(self, how: str, text: object, pattern: str) -> Filter:
        # D365 documents contains as ``eq '*x*'``; contains()/startswith() functions are UNCONFIRMED there.
        if not isinstance(text, str) or not text:
            raise ODataQueryError(f"{how}() on {self.name} needs a non-empty string")
        if "*" in text:
            raise ODataQueryError(
                f"{how}({text!r}) on {self.name}: D365 matches with '*' wildcards, so a literal '*' "
                "cannot be searched for"
            )
        return self.like(pattern.format(text))

    def contains(self, text: str) -> Filter:
        return self._wildcard("contains", text, "*{}*")

    def startswith(self, text: str) -> Filter:
        return self._wildcard("startswith", text, "{}*")

    def endswith(self, text: str) -> Filter:
        return self._wildcard("endswith", text, "*{}")

    def in_(self, values: Iterable[object]) -> Filter:
        """``(A eq 'x' or A eq 'y')``: D365 does not support the ``in`` operator (ref §1.3)."""
        if isinstance(values, str | bytes) or not isinstance(values, Iterable):
            raise ODataQueryError(f"in_() on {self.name} needs a list of values, not {values!r}")
        terms = [self._compare("eq", value).text for value in values]
        if not terms:
            raise ODataQueryError(f"in_() on {self.name} needs at least one value")
        if len(terms) == 1:
            return Filter(terms[0])
        return Filter("(" + " or ".join(terms) + ")")


F = Field


def _names(value: str | Iterable[str] | None, what: str, pattern: re.Pattern[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            out.append(_identifier(part, what, pattern))
    return tuple(out)


_ORDER = re.compile(
    r"([A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)*)(?:\s+(asc|desc))?\Z", re.IGNORECASE
)


def _orderby(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            match = _ORDER.match(part)
            if not match:
                raise ODataQueryError(f"invalid $orderby item {part!r}: expected 'Field' or 'Field desc'")
            out.append(match.group(1) + (f" {match.group(2).lower()}" if match.group(2) else ""))
    return tuple(out)


def _expand(value: str | Iterable[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    out = []
    for item in items:
        for part in (p.strip() for p in str(item).split(",")):
            if "/" in part or "(" in part or "$" in part:
                raise ODataQueryError(
                    f"$expand={part!r}: D365 supports only first-level expansion (no nested or options)"
                )
            out.append(_identifier(part, "navigation property"))
    return tuple(out)


def _non_negative(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ODataQueryError(f"{what} must be a non-negative integer, not {value!r}")
    return value


_RESERVED = frozenset(
    {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "cross-company"}
)


@dataclass(frozen=True)
class Query:
    """One collection query; ``to_params()`` gives the query-string parameters in a stable order."""

    entity_set: str
    filter: Filter | str | None = None
    select: tuple[str, ...] = ()
    expand: tuple[str, ...] = ()
    orderby: tuple[str, ...] = ()
    top: int | None = None
    skip: int | None = None
    count: bool = False
    cross_company: bool = False
    extra: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        entity_set: str,
        *,
        filter: Filter | str | None = None,
        select: str | Iterable[str] | None = None,
        expand: str | Iterable[str] | None = None,
        orderby: str | Iterable[str] | None = None,
        top: int | None = None,
        skip: int | None = None,
        count: bool = False,
        cross_company: bool = False,
        extra: Mapping[str, str] | None = None,
    ) -> Query:
        """Validate and normalise loosely typed arguments (strings or lists) into a ``Query``."""
        _identifier(entity_set, "entity set name")
        if filter is not None and not isinstance(filter, Filter | str):
            raise ODataQueryError(f"filter must be a Filter or a string, not {type(filter).__name__}")
        if isinstance(filter, str) and not filter.strip():
            filter = None
        for name in extra or {}:
            if name in _RESERVED:
                raise ODataQueryError(f"pass {name} through its own argument, not extra params")
        return cls(
            entity_set=entity_set,
            filter=filter,
            select=_names(select, "$select property", _PROPERTY_PATH),
            expand=_expand(expand),
            orderby=_orderby(orderby),
            top=_non_negative(top, "$top"),
            skip=_non_negative(skip, "$skip"),
            count=bool(count),
            cross_company=bool(cross_company),
            extra=dict(extra or {}),
        )

    @property
    def path(self) -> str:
        return entity_path(self.entity_set)

    def to_params(self) -> dict[str, str]:
        params: dict[str, str] = {}
        if self.filter is not None:
            params["$filter"] = str(self.filter)
        if self.select:
            params["$select"] = ",".join(self.select)
        if self.expand:
            params["$expand"] = ",".join(self.expand)
        if self.orderby:
            params["$orderby"] = ",".join(self.orderby)
        if self.top is not None:
            params["$top"] = str(self.top)
        if self.skip is not None:
            params["$skip"] = str(self.skip)
        if self.count:
            params["$count"] = "true"
        if self.cross_company:
            params["cross-company"] = "true"
        params.update(self.extra)
        return params


def encode_query(params: Mapping[str, str]) -> str:
    """Encode parameters as OData expects: ``$`` kept, spaces as ``%20`` (not ``+``), quotes kept."""
    return "&".join(f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}" for k, v in params.items())
