"""HTTP trigger route templates, matched the way the Functions host (ASP.NET Core routing) matches them.

Supported template syntax: literal segments (case-insensitive), ``{name}``, optional ``{name?}``, default
values ``{name=value}``, catch-all ``{*rest}`` / ``{**rest}``, parameters mixed with literals inside a
segment (``{name}.{ext}``), and inline constraints chained with ``:`` — ``int``, ``long``, ``bool``,
``alpha``, ``guid``, ``datetime``, ``decimal``, ``double``, ``float``, ``minlength(n)``, ``maxlength(n)``,
``length(n)``, ``length(a,b)``, ``min(n)``, ``max(n)``, ``range(a,b)``, ``regex(expr)``, ``required``.
A value failing its constraint means the route does not match (404), as in the host.

Routes are tried in ASP.NET precedence order (literal segments before constrained parameters before plain
parameters before catch-alls), and a route whose method list excludes the request method is skipped — the
host answers 404, not 405, when no route accepts the method. Pure: no I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation

__all__ = ["Route", "RouteError", "RouteMatch", "RouteTable", "parse_route"]

_PARAM = re.compile(r"\{([^{}]*(?:\([^)]*\)[^{}]*)*)\}")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class RouteError(ValueError):
    """A route template the runner cannot parse."""


def _parses(parse: Callable[[str], object], error: type[Exception] = ValueError) -> Callable[[str], bool]:
    """A check that ``parse`` takes the value without raising ``error``."""

    def check(value: str) -> bool:
        try:
            parse(value)
        except error:
            return False
        return True

    return check


def _int_in(bounds: tuple[int, int]) -> Callable[[str], bool]:
    return lambda v: re.fullmatch(r"[+-]?\d+", v) is not None and bounds[0] <= int(v) <= bounds[1]


_SIMPLE: dict[str, Callable[[str], bool]] = {
    "int": _int_in(_INT32),
    "long": _int_in(_INT64),
    "bool": lambda v: v.lower() in ("true", "false"),
    "alpha": lambda v: re.fullmatch(r"[A-Za-z]+", v) is not None,
    "guid": _parses(uuid.UUID),
    "datetime": _parses(datetime.fromisoformat),
    "decimal": _parses(Decimal, InvalidOperation),
    "double": _parses(float),
    "float": _parses(float),
    "required": lambda v: v != "",
}


def _constraint(text: str) -> Callable[[str], bool]:
    name, _, args_text = text.partition("(")
    name = name.strip().lower()
    if not args_text:
        if name not in _SIMPLE:
            raise RouteError(f"unknown route constraint {text!r}")
        return _SIMPLE[name]
    args_text = args_text.removesuffix(")")
    if name == "regex":
        pattern = re.compile(args_text, re.IGNORECASE)
        return lambda v: pattern.search(v) is not None
    try:
        args = [int(a) for a in args_text.split(",")]
    except ValueError as exc:
        raise RouteError(f"route constraint {text!r} needs integer arguments") from exc
    checks: dict[str, Callable[[str], bool]] = {
        "minlength": lambda v: len(v) >= args[0],
        "maxlength": lambda v: len(v) <= args[0],
        "length": lambda v: len(v) == args[0] if len(args) == 1 else args[0] <= len(v) <= args[1],
        "min": lambda v: _SIMPLE["long"](v) and int(v) >= args[0],
        "max": lambda v: _SIMPLE["long"](v) and int(v) <= args[0],
        "range": lambda v: _SIMPLE["long"](v) and args[0] <= int(v) <= args[-1],
    }
    if name not in checks:
        raise RouteError(f"unknown route constraint {text!r}")
    return checks[name]


def _split_constraints(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


@dataclass(frozen=True)
class _Param:
    name: str
    optional: bool
    default: str | None
    catch_all: bool
    checks: tuple[Callable[[str], bool], ...]


def _parse_param(body: str) -> _Param:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    name_part, *constraint_texts = _split_constraints(body)
    default = None
    if "=" in name_part:
        name_part, default = name_part.split("=", 1)
    optional = name_part.endswith("?") or catch_all
    name = name_part.rstrip("?").strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise RouteError(f"bad route parameter name {name!r}")
    return _Param(
        name,
        optional or default is not None,
        default,
        catch_all,
        tuple(_constraint(c) for c in constraint_texts if c),
    )


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    params: dict[str, str]


@dataclass(frozen=True)
class Route:
    """One function's route: template, accepted methods (empty = all) and what it points at."""

    template: str
    methods: frozenset[str]
    target: str
    pattern: re.Pattern[str] = field(repr=False)
    params: tuple[_Param, ...] = field(repr=False)
    precedence: tuple[int, ...] = field(repr=False)

    def allows(self, method: str) -> bool:
        return not self.methods or method.upper() in self.methods

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values: dict[str, str] = {}
        for index, param in enumerate(self.params):
            value = found.group(f"p{index}")
            if value is None or value == "":
                if param.default is not None:
                    values[param.name] = param.default
                continue
            if not all(check(value) for check in param.checks):
                return None
            values[param.name] = value
        return values


def parse_route(template: str, *, methods: Iterable[str] = (), target: str = "") -> Route:
    """Compile a route template (without the ``api/`` prefix) into a matcher."""
    cleaned = template.strip().strip("/")
    regex = ""
    params: list[_Param] = []
    ranks: list[int] = []
    segments = cleaned.split("/") if cleaned else []
    for position, segment in enumerate(segments):
        pieces = _PARAM.split(segment)  # literal, param, literal, param, ...
        if len(pieces) == 1:
            regex += "/" + re.escape(segment)
            ranks.append(1)
            continue
        whole = len(pieces) == 3 and pieces[0] == "" and pieces[2] == ""
        seg_regex = ""
        for index, piece in enumerate(pieces):
            if index % 2 == 0:
                seg_regex += re.escape(piece)
                continue
            param = _parse_param(piece)
            if param.catch_all and (not whole or position != len(segments) - 1):
                raise RouteError(f"{template!r}: a catch-all parameter must be the whole last segment")
            group = f"p{len(params)}"
            params.append(param)
            seg_regex += f"(?P<{group}>.*)" if param.catch_all else f"(?P<{group}>[^/]+)"
        if whole and params[-1].optional:
            regex += f"(?:/{seg_regex})?"
        else:
            regex += "/" + seg_regex
        last = params[-1]
        ranks.append(5 if last.catch_all else 2 if not whole else 3 if last.checks else 4)
    return Route(
        template=cleaned,
        methods=frozenset(m.upper() for m in methods),
        target=target,
        pattern=re.compile(regex, re.IGNORECASE | re.DOTALL),
        params=tuple(params),
        precedence=tuple(ranks),
    )


class RouteTable:
    """All HTTP routes in precedence order; ``find`` returns the first that matches path and method."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = sorted(routes, key=lambda r: (r.precedence, r.template.lower()))

    def find(self, path: str, method: str) -> RouteMatch | None:
        normalized = "/" + path.strip("/") if path.strip("/") else ""
        for route in self.routes:
            if not route.allows(method):
                continue
            params = route.match(normalized)
            if params is not None:
                return RouteMatch(route, params)
        return None

    def path_exists(self, path: str) -> bool:
        """Whether some route matches the path for *any* method (used only in diagnostics)."""
        normalized = "/" + path.strip("/") if path.strip("/") else ""
        return any(route.match(normalized) is not None for route in self.routes)
