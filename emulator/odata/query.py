"""OData query options → SQLite for the emulator (sans-IO): $filter, $orderby, $select, $expand, $top, $skip,
$count and key predicates (ref §1.1, §1.3).

Storage contract (the store creates one table per entity set, one column per property, same names):
Edm.String → TEXT; Edm.Int32/Int64 → INTEGER; Edm.Decimal → REAL; Edm.Boolean → INTEGER 0/1;
Edm.DateTimeOffset → TEXT `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds); Edm.Date → TEXT `YYYY-MM-DD`;
enums → TEXT member symbol; Edm.Guid → TEXT lowercase canonical.

Every user value becomes a `?` parameter; only schema identifiers (double-quoted) and enum member symbols
from the schema are ever written into SQL text.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final
from urllib.parse import unquote
from uuid import UUID

from emulator.odata import filter_parser as fp
from emulator.odata.filter_parser import ODataQueryError
from emulator.odata.schema import (
    EDM_BOOLEAN,
    EDM_DATE,
    EDM_DATETIMEOFFSET,
    EDM_DECIMAL,
    EDM_GUID,
    EDM_INT32,
    EDM_INT64,
    EDM_STRING,
    NAMESPACE,
    Catalog,
    EntityType,
    EnumType,
    Navigation,
    Property,
)

__all__ = [
    "ExpandItem",
    "ODataQueryError",
    "SqlFragment",
    "compile_filter",
    "compile_orderby",
    "literal_to_storage",
    "parse_count",
    "parse_expand",
    "parse_key_predicate",
    "parse_select",
    "parse_skip",
    "parse_top",
]

EDM_DOUBLE: Final = "Edm.Double"  # only ever the type of a literal (1e3, 1.5d); no property uses it
_NUMERIC: Final = frozenset({EDM_INT32, EDM_INT64, EDM_DECIMAL, EDM_DOUBLE})
_INTEGRAL: Final = frozenset({EDM_INT32, EDM_INT64})
_INT_RANGES: Final = {EDM_INT32: (-(2**31), 2**31 - 1), EDM_INT64: (-(2**63), 2**63 - 1)}
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# ODL's BinaryOperatorKind / UnaryOperatorKind names, used in its type-mismatch messages.
_OPERATOR_KIND: Final = {
    "eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual", "lt": "LessThan",
    "le": "LessThanOrEqual", "and": "And", "or": "Or", "add": "Add", "sub": "Subtract", "mul": "Multiply",
    "div": "Divide", "divby": "Divide", "mod": "Modulo", "not": "Not", "neg": "Negate",
}  # fmt: skip
_SQL_ORDERING: Final = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass(frozen=True)
class SqlFragment:
    sql: str
    params: list[Any]


@dataclass(frozen=True)
class ExpandItem:
    navigation: Navigation
    select: list[str] | None  # from $expand=Nav($select=A,B); None = all properties


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _prop_type(prop: Property) -> str:
    """Edm type name, or the qualified enum name for enum properties (what ODL prints in messages)."""
    return prop.enum_type.qualified_name if prop.enum_type is not None else prop.edm_type


def _is_enum(type_name: str | None) -> bool:
    return type_name is not None and not type_name.startswith("Edm.")


def _not_found(name: str, entity: EntityType) -> ODataQueryError:
    return ODataQueryError(f"Could not find a property named '{name}' on type '{entity.qualified_name}'.")


def _check_alias(alias: str) -> None:
    if not _IDENTIFIER.fullmatch(alias):
        raise ValueError(f"invalid SQL alias {alias!r}")


def _resolve_enum_literal(type_name: str, member: str, raw: str, enums: dict[str, EnumType]) -> EnumType:
    """Validate `Namespace.Enum'Member'` (ref §1.3: literals are namespace-qualified)."""
    namespace, _, name = type_name.rpartition(".")
    if not namespace:
        raise ODataQueryError(
            f"The enum literal {raw} must be qualified with the namespace: {NAMESPACE}.{type_name}'{member}'."
        )
    enum = enums.get(name) if namespace == NAMESPACE else None
    if enum is None:
        raise ODataQueryError(f"The type '{type_name}' is not a known enum type.")
    if member not in enum.members:
        raise ODataQueryError(
            f"The string '{member}' is not a valid enumeration type constant for '{enum.qualified_name}'."
        )
    return enum


# ---------------------------------------------------------------------------------------------------------
# $filter
# ---------------------------------------------------------------------------------------------------------


@dataclass
class _Expr:
    """A compiled sub-expression: SQL text, its parameters (in order) and its OData type."""

    sql: str
    params: list[Any]
    type: str | None  # Edm type / qualified enum name; None = the null literal
    # navigation aliases referenced but not yet bound by an EXISTS (alias → (navigation, target type))
    navs: dict[str, tuple[Navigation, EntityType]] = field(default_factory=dict)
    wildcard: str | None = None  # set on a string literal containing '*' (the D365 "contains", ref §1.3)


def _incompatible(op: str, left: str | None, right: str | None) -> ODataQueryError:
    return ODataQueryError(
        "A binary operator with incompatible types was detected. Found operand types "
        f"'{left or 'null'}' and '{right or 'null'}' for operator kind '{_OPERATOR_KIND[op]}'."
    )


def _like_pattern(value: str) -> str:
    """D365 wildcard → LIKE pattern: '*' → '%', literal '%', '_' and the escape char escaped (ESCAPE '\\')."""
    out: list[str] = []
    for ch in value:
        if ch == "*":
            out.append("%")
        elif ch in "%_\\":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _enclosed(sql: str) -> bool:
    """True when `sql` is one parenthesised group, so callers can AND it with other conditions as is."""
    if not sql.startswith("("):
        return False
    depth = 0
    for i, ch in enumerate(sql):  # generated SQL has no parentheses inside quotes
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0:
            return i == len(sql) - 1
    return False


def _numeric_result(left: str | None, right: str | None) -> str:
    for candidate in (EDM_DOUBLE, EDM_DECIMAL, EDM_INT64):
        if candidate in (left, right):
            return candidate
    return EDM_INT32


class _FilterCompiler:
    def __init__(self, text: str, entity: EntityType, catalog: Catalog, alias: str) -> None:
        self.text = text
        self.entity = entity
        self.catalog = catalog
        self.alias = alias

    def compile(self) -> SqlFragment:
        expr = self._expr(fp.parse_filter_ast(self.text))
        if expr.type not in (EDM_BOOLEAN, None):
            raise ODataQueryError("The $filter expression must evaluate to a single boolean value.")
        expr = self._bind_navs(expr)
        return SqlFragment(expr.sql if _enclosed(expr.sql) else f"({expr.sql})", expr.params)

    def _expr(self, node: fp.Node) -> _Expr:
        if isinstance(node, fp.Literal):
            return self._literal(node)
        if isinstance(node, fp.PathExpr):
            return self._path(node)
        if isinstance(node, fp.UnaryExpr):
            return self._unary(node)
        return self._binary(node)

    # -- leaves --------------------------------------------------------------------------------------------

    def _literal(self, node: fp.Literal) -> _Expr:
        kind, value = node.kind, node.value
        if kind == "null":
            return _Expr("NULL", [], None)
        if kind == "bool":
            return _Expr("?", [1 if value else 0], EDM_BOOLEAN)
        if kind == fp.STRING:
            return _Expr("?", [value], EDM_STRING, wildcard=value if "*" in value else None)
        if kind == fp.INT:
            lo, hi = _INT_RANGES[EDM_INT32]
            return _Expr("?", [value], EDM_INT32 if lo <= value <= hi else EDM_INT64)
        if kind == fp.ENUM:
            type_name, member = value
            enum = _resolve_enum_literal(type_name, member, node.raw, self.catalog.enums)
            return _Expr("?", [member], enum.qualified_name)
        edm = {
            fp.DECIMAL: EDM_DECIMAL,
            fp.DOUBLE: EDM_DOUBLE,
            fp.DATETIMEOFFSET: EDM_DATETIMEOFFSET,
            fp.DATE: EDM_DATE,
            fp.GUID: EDM_GUID,
        }[kind]
        return _Expr("?", [value], edm)  # the lexer already produced the storage form

    def _target(self, nav: Navigation) -> EntityType:
        target = self.catalog.entities.get(nav.target_set)
        if target is None:
            raise ODataQueryError(
                f"The navigation property '{nav.name}' targets the entity set '{nav.target_set}', "
                "which is not served."
            )
        return target

    def _path(self, node: fp.PathExpr) -> _Expr:
        segments = node.segments
        first = segments[0]
        if len(segments) == 1:
            prop = self.entity.property(first)
            if prop is not None:
                return _Expr(f"{self.alias}.{_q(first)}", [], _prop_type(prop))
            if self.entity.navigation(first) is not None:
                raise ODataQueryError(
                    f"The navigation property '{first}' cannot be used as a value; "
                    f"filter on one of its properties, e.g. '{first}/<Property>'."
                )
            raise _not_found(first, self.entity)
        path = "/".join(segments)
        nav = self.entity.navigation(first)
        if nav is None:
            if self.entity.property(first) is not None:
                raise ODataQueryError(
                    f"The property '{first}' on type '{self.entity.qualified_name}' is not a navigation "
                    f"property, so '{path}' is not a valid path."
                )
            raise _not_found(first, self.entity)
        if len(segments) > 2:
            raise ODataQueryError(
                f"The path '{path}' is not supported; $filter allows one level of navigation (Nav/Property)."
            )
        name = segments[1]
        if nav.collection:
            # A collection needs any()/all(), which are rejected by the parser.
            raise ODataQueryError(
                f"The parent value for a property access of a property '{name}' is not a single value. "
                "Property access can only be applied to a single value."
            )
        target = self._target(nav)
        prop = target.property(name)
        if prop is None:
            raise _not_found(name, target)
        # Alias per navigation (not per occurrence): `Nav/A eq Nav/B` must see the same related row.
        nav_alias = f"{self.alias}_n{self.entity.navigations.index(nav)}"
        return _Expr(f"{nav_alias}.{_q(name)}", [], _prop_type(prop), {nav_alias: (nav, target)})

    def _bind_navs(self, expr: _Expr) -> _Expr:
        """Wrap a boolean expression using Nav/Prop in a correlated EXISTS over the target table(s).

        Done at the innermost boolean (each comparison), so `Nav/A eq 1 or Nav/B eq 2` is two EXISTS, and a
        missing related row makes the comparison false.
        """
        if not expr.navs:
            return expr
        tables: list[str] = []
        conditions: list[str] = []
        for nav_alias, (nav, target) in sorted(expr.navs.items()):
            tables.append(f"{_q(target.set_name)} AS {nav_alias}")
            for local, remote in nav.on:
                remote_prop = target.property(remote)
                # Joins are case-insensitive like the rest of SQL Server's string handling.
                collate = " COLLATE NOCASE" if remote_prop and remote_prop.edm_type == EDM_STRING else ""
                conditions.append(f"{nav_alias}.{_q(remote)} = {self.alias}.{_q(local)}{collate}")
        conditions.append(expr.sql)
        sql = f"EXISTS (SELECT 1 FROM {', '.join(tables)} WHERE {' AND '.join(conditions)})"
        return _Expr(sql, expr.params, EDM_BOOLEAN)

    # -- operators -----------------------------------------------------------------------------------------

    def _unary(self, node: fp.UnaryExpr) -> _Expr:
        operand = self._expr(node.operand)
        if node.op == "not":
            allowed: tuple[str | None, ...] = (EDM_BOOLEAN, None)
        else:
            allowed = (*_NUMERIC, None)
        if operand.type not in allowed:
            raise ODataQueryError(
                "A unary operator with an incompatible type was detected. Found operand type "
                f"'{operand.type}' for operator kind '{_OPERATOR_KIND[node.op]}'."
            )
        if node.op == "not":
            operand = self._bind_navs(operand)
            return _Expr(f"(NOT {operand.sql})", operand.params, EDM_BOOLEAN)
        return _Expr(f"(-{operand.sql})", operand.params, operand.type or EDM_INT32, operand.navs)

    def _binary(self, node: fp.BinaryExpr) -> _Expr:
        op = node.op
        left, right = self._expr(node.left), self._expr(node.right)
        if op in ("and", "or"):
            if left.type not in (EDM_BOOLEAN, None) or right.type not in (EDM_BOOLEAN, None):
                raise _incompatible(op, left.type, right.type)
            left, right = self._bind_navs(left), self._bind_navs(right)
            return _Expr(f"({left.sql} {op.upper()} {right.sql})", left.params + right.params, EDM_BOOLEAN)
        if op in fp.COMPARISON_OPS:
            return self._bind_navs(self._comparison(op, left, right))
        return self._arithmetic(op, left, right)

    def _comparison(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        lt, rt = left.type, right.type
        if op not in ("eq", "ne") and (_is_enum(lt) or _is_enum(rt)):
            raise ODataQueryError(
                f"Only the 'eq' and 'ne' operators are supported for enum values; found '{op}'."
            )
        numeric = lt in _NUMERIC and rt in _NUMERIC
        if not (lt is None or rt is None or numeric or lt == rt):
            raise _incompatible(op, lt, right.type)
        navs = {**left.navs, **right.navs}

        if lt is None or rt is None:
            other = right if lt is None else left
            if op in ("eq", "ne"):
                test = "IS NULL" if op == "eq" else "IS NOT NULL"
                return _Expr(f"({other.sql} {test})", other.params, EDM_BOOLEAN, other.navs)
            # Ordering against null is false (.NET lifted-operator semantics, which OData follows).
            return _Expr("0", [], EDM_BOOLEAN)

        if op in ("eq", "ne") and lt == EDM_STRING:
            wildcard, subject = right.wildcard, left
            if wildcard is None:
                wildcard, subject = left.wildcard, right
            if wildcard is not None:
                # ref §1.3: "contains" is `eq '*x*'`; SQLite's LIKE is case-insensitive like D365's collation.
                like = _like_pattern(wildcard)
                if op == "eq":
                    sql = f"({subject.sql} LIKE ? ESCAPE '\\')"
                else:  # null ne pattern is true, as with every other ne
                    sql = f"COALESCE({subject.sql} NOT LIKE ? ESCAPE '\\', 1)"
                return _Expr(sql, [*subject.params, like], EDM_BOOLEAN, subject.navs)

        # IS / IS NOT are SQLite's null-safe =/<>: OData's `null ne 'x'` is true and `null eq null` is true.
        sql_op = {"eq": "IS", "ne": "IS NOT"}.get(op) or _SQL_ORDERING[op]
        # D365 compares strings case-insensitively (SQL Server collation); postfix COLLATE covers both sides.
        collate = " COLLATE NOCASE" if lt == EDM_STRING else ""
        sql = f"({left.sql} {sql_op} {right.sql}{collate})"
        return _Expr(sql, left.params + right.params, EDM_BOOLEAN, navs)

    def _arithmetic(self, op: str, left: _Expr, right: _Expr) -> _Expr:
        for side in (left.type, right.type):
            if side is not None and side not in _NUMERIC:
                raise _incompatible(op, left.type, right.type)
        result = _numeric_result(left.type, right.type)
        integral = result in _INTEGRAL
        navs = {**left.navs, **right.navs}
        a, b = left.sql, right.sql
        params = left.params + right.params
        if op in ("add", "sub", "mul"):
            sql = f"({a} {({'add': '+', 'sub': '-', 'mul': '*'})[op]} {b})"
        elif op == "div" and integral:
            sql = f"({a} / {b})"  # OData div on integers truncates, as SQLite's integer division does
        elif op in ("div", "divby"):
            sql = f"(CAST({a} AS REAL) / {b})"  # divby is always decimal division (ref §1.3)
            result = EDM_DECIMAL if integral else result
        elif integral:  # mod
            sql = f"({a} % {b})"
        else:
            # SQLite's % truncates real operands to integers; use a - b*trunc(a/b) (sign of the dividend).
            sql = f"({a} - {b} * CAST(CAST({a} AS REAL) / {b} AS INTEGER))"
            params = [*left.params, *right.params, *left.params, *right.params]
        return _Expr(sql, params, result, navs)


def compile_filter(text: str, entity: EntityType, catalog: Catalog, *, alias: str = "t") -> SqlFragment:
    """Compile `$filter` text into a parenthesised, parameterised WHERE fragment over `alias` (ref §1.3)."""
    _check_alias(alias)
    return _FilterCompiler(text, entity, catalog, alias).compile()


# ---------------------------------------------------------------------------------------------------------
# $orderby, $select, $expand
# ---------------------------------------------------------------------------------------------------------


def _sort_key(prop: Property, column: str) -> str:
    if prop.enum_type is not None:
        # F&O stores enums as integers and sorts by value; members are declared in value order.
        whens = " ".join(f"WHEN {_sql_text(m)} THEN {i}" for i, m in enumerate(prop.enum_type.members))
        return f"CASE {column} {whens} END"
    if prop.edm_type == EDM_STRING:
        return f"{column} COLLATE NOCASE"
    return column


def compile_orderby(text: str, entity: EntityType, *, alias: str = "t") -> str:
    """`Name desc, CreditLimit` → `t."Name" COLLATE NOCASE DESC, t."CreditLimit" ASC`."""
    _check_alias(alias)
    tokens = fp.tokenize(text)
    parts: list[str] = []
    i = 0
    while True:
        tok = tokens[i]
        if tok.kind != fp.IDENT:
            raise ODataQueryError(f"Expression expected at position {tok.pos} in '{text}'.")
        following = tokens[i + 1].kind
        if following == fp.LPAREN:
            raise fp.function_error(tok.text)
        if following == fp.SLASH:
            raise ODataQueryError(f"Ordering by a navigation path is not supported ('{tok.text}/...').")
        prop = entity.property(tok.text)
        if prop is None:
            if entity.navigation(tok.text) is not None:
                raise ODataQueryError(f"The navigation property '{tok.text}' cannot be used in $orderby.")
            raise _not_found(tok.text, entity)
        i += 1
        direction = "ASC"
        if tokens[i].kind == fp.IDENT and tokens[i].text in ("asc", "desc"):
            direction = tokens[i].text.upper()
            i += 1
        parts.append(f"{_sort_key(prop, f'{alias}.{_q(prop.name)}')} {direction}")
        if tokens[i].kind == fp.EOF:
            return ", ".join(parts)
        if tokens[i].kind != fp.COMMA:
            raise fp.syntax_error(tokens[i].pos, text)
        i += 1


def _split_top_level(text: str, sep: str, whole: str, offset: int = 0) -> list[tuple[str, int]]:
    """Split on `sep` outside parentheses and quotes; returns (part, position in `whole`)."""
    parts: list[tuple[str, int]] = []
    depth, quoted, begin = 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted  # an escaped '' toggles twice
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise fp.syntax_error(offset + i, whole)
        elif ch == sep and depth == 0:
            parts.append((text[begin:i], offset + begin))
            begin = i + 1
    if depth or quoted:
        raise fp.syntax_error(offset + len(text), whole)
    parts.append((text[begin:], offset + begin))
    return parts


def parse_select(text: str, entity: EntityType) -> list[str]:
    """Validated property names in request order, duplicates dropped; `*` stands for every property."""
    names: list[str] = []
    for raw, pos in _split_top_level(text, ",", text):
        item = raw.strip()
        if item == "*":
            names.extend(p.name for p in entity.properties)
            continue
        if "/" in item:
            nav = item.split("/", 1)[0]
            raise ODataQueryError(
                f"The $select path '{item}' is not supported; select the properties of a related entity "
                f"with $expand={nav}($select=...)."
            )
        if not _IDENTIFIER.fullmatch(item):
            raise fp.syntax_error(pos + len(raw) - len(raw.lstrip()), text)
        if entity.property(item) is None:
            if entity.navigation(item) is not None:
                raise ODataQueryError(
                    f"The navigation property '{item}' cannot be selected; use $expand={item} instead."
                )
            raise _not_found(item, entity)
        names.append(item)
    return list(dict.fromkeys(names))


_NESTED_OPTIONS_REJECTED: Final = frozenset(
    {"$filter", "$orderby", "$top", "$skip", "$count", "$search", "$levels", "$compute", "$apply"}
)


def _first_level_only(detail: str) -> ODataQueryError:
    return ODataQueryError(f"Only first-level expansion is supported (ref: $expand); {detail}.")


def _expand_options(
    options: str, offset: int, text: str, nav: Navigation, target: EntityType
) -> list[str] | None:
    select: list[str] | None = None
    if not options.strip():
        raise fp.syntax_error(offset, text)
    for raw, pos in _split_top_level(options, ";", text, offset):
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not eq:
            raise fp.syntax_error(pos, text)
        if name == "$select":
            if select is not None:
                raise ODataQueryError(
                    f"$select is specified more than once for the expansion of '{nav.name}'."
                )
            select = parse_select(value, target)
        elif name == "$expand":
            raise _first_level_only(f"'{nav.name}' cannot itself contain $expand")
        elif name in _NESTED_OPTIONS_REJECTED:
            raise ODataQueryError(
                f"The query option '{name}' is not supported inside $expand; only $select is."
            )
        else:
            raise ODataQueryError(f"'{name}' is not a valid query option inside $expand.")
    return select


def parse_expand(text: str, entity: EntityType, catalog: Catalog) -> list[ExpandItem]:
    """First-level navigations only (ref §1.3), each optionally with a nested `$select`."""
    items: list[ExpandItem] = []
    seen: set[str] = set()

    def target_of(nav: Navigation) -> EntityType:
        target = catalog.entities.get(nav.target_set)
        if target is None:
            raise ODataQueryError(
                f"The navigation property '{nav.name}' targets the entity set '{nav.target_set}', "
                "which is not served."
            )
        return target

    for raw, pos in _split_top_level(text, ",", text):
        item = raw.strip()
        start = pos + len(raw) - len(raw.lstrip())
        paren = item.find("(")
        path = (item if paren < 0 else item[:paren]).rstrip()
        if paren >= 0 and not item.endswith(")"):
            raise fp.syntax_error(start + len(item), text)
        if path == "*" and paren < 0:
            navs = list(entity.navigations)
        elif "/" in path:
            raise _first_level_only(f"'{path}' is a nested path")
        elif not _IDENTIFIER.fullmatch(path):
            raise fp.syntax_error(start, text)
        else:
            nav = entity.navigation(path)
            if nav is None:
                if entity.property(path) is not None:
                    raise ODataQueryError(
                        f"Property '{path}' on type '{entity.qualified_name}' is not a navigation property "
                        "or complex property. Only navigation properties can be expanded."
                    )
                raise _not_found(path, entity)
            navs = [nav]
        for nav in navs:
            if nav.name in seen:
                raise ODataQueryError(f"The navigation property '{nav.name}' is expanded more than once.")
            seen.add(nav.name)
            target = target_of(nav)
            select = None
            if paren >= 0:
                select = _expand_options(item[paren + 1 : -1], start + paren + 1, text, nav, target)
            items.append(ExpandItem(nav, select))
    return items


# ---------------------------------------------------------------------------------------------------------
# $top, $skip, $count
# ---------------------------------------------------------------------------------------------------------


def _non_negative(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]+", text) or int(text) > _INT_RANGES[EDM_INT64][1]:
        raise ODataQueryError(
            f"Invalid value '{text}' for {option} query option found. "
            f"The {option} query option requires a non-negative integer value."
        )
    return int(text)


def parse_top(text: str | None) -> int | None:
    return _non_negative(text, "$top")


def parse_skip(text: str | None) -> int | None:
    return _non_negative(text, "$skip")


def parse_count(text: str | None) -> bool:
    if text is None:
        return False
    lowered = text.lower()
    if lowered not in ("true", "false"):
        raise ODataQueryError(f"'{text}' is not a valid count option.")
    return lowered == "true"


# ---------------------------------------------------------------------------------------------------------
# Key predicates and literal conversion
# ---------------------------------------------------------------------------------------------------------


def _key_count_error(entity: EntityType, detail: str = "") -> ODataQueryError:
    return ODataQueryError(
        "The number of keys specified in the URI does not match number of key properties for the resource "
        f"'{entity.qualified_name}'." + (f" {detail}" if detail else "")
    )


def _key_value(prop: Property, tok: fp.Token) -> Any:
    """Convert one key literal to storage form; its token kind must fit the property's type."""
    edm, kind = prop.edm_type, tok.kind
    if prop.enum_type is not None:
        enum = prop.enum_type
        if kind == fp.ENUM and tok.value[0] in (enum.name, enum.qualified_name):
            type_name, member = tok.value
            _resolve_enum_literal(type_name, member, tok.text, {enum.name: enum})
            return member
        if kind == fp.STRING:
            # A quoted symbol for an enum key part is accepted (UNCONFIRMED in ref §1.1; strict OData 4.0
            # wants the qualified literal, but the ref's HR example shows `LeaveType='Vacation'`).
            return literal_to_storage(prop, tok.value)
    elif edm == EDM_STRING and kind == fp.STRING:
        return tok.value
    elif (edm in _INTEGRAL and kind == fp.INT) or (
        edm == EDM_DECIMAL and kind in (fp.INT, fp.DECIMAL, fp.DOUBLE)
    ):
        return literal_to_storage(prop, tok.value)
    elif edm == EDM_BOOLEAN and kind == fp.IDENT and tok.text in ("true", "false"):
        return 1 if tok.text == "true" else 0
    elif (edm, kind) in ((EDM_DATE, fp.DATE), (EDM_DATETIMEOFFSET, fp.DATETIMEOFFSET), (EDM_GUID, fp.GUID)):
        return tok.value  # the lexer already normalised it
    raise ODataQueryError(
        f"The key value '{tok.text}' is not a valid '{_prop_type(prop)}' literal "
        f"for key property '{prop.name}'."
    )


def _is_key_value_token(tok: fp.Token) -> bool:
    return tok.kind in fp.LITERAL_KINDS or (tok.kind == fp.IDENT and tok.text in ("true", "false"))


def parse_key_predicate(text: str, entity: EntityType) -> dict[str, Any]:
    """Parse the inside of `Set(...)` into {key property: storage value}, in the entity's key order.

    Named parts may come in any order and all key properties are required (ref §1.1); one unnamed value
    is allowed only for single-key entities (`LegalEntities('USMF')`). Percent-escapes are decoded once,
    so both the raw path segment (`%27USMF%27`) and an already-decoded one work — unless a decoded value
    itself contains a `%XX` sequence, so callers should prefer the raw segment.
    """
    decoded = unquote(text)
    tokens = fp.tokenize(decoded, allow_equals=True)
    keys = entity.keys
    if tokens[0].kind == fp.EOF:
        raise _key_count_error(entity)

    if not (tokens[0].kind == fp.IDENT and tokens[1].kind == fp.EQUALS):
        tok = tokens[0]
        if not _is_key_value_token(tok):
            raise fp.syntax_error(tok.pos, decoded)
        if tokens[1].kind != fp.EOF:
            raise fp.syntax_error(tokens[1].pos, decoded)
        if len(keys) != 1:
            raise _key_count_error(entity, f"The key is ({', '.join(keys)}); name every part.")
        prop = entity.property(keys[0])
        if prop is None:
            raise LookupError(f"key {keys[0]!r} of {entity.name} is not a property")
        return {keys[0]: _key_value(prop, tok)}

    values: dict[str, Any] = {}
    i = 0
    while True:
        name_tok, eq_tok, value_tok = tokens[i], tokens[i + 1], tokens[i + 2]
        if name_tok.kind != fp.IDENT:
            raise fp.syntax_error(name_tok.pos, decoded)
        if eq_tok.kind != fp.EQUALS:
            raise fp.syntax_error(eq_tok.pos, decoded)
        if not _is_key_value_token(value_tok):
            raise fp.syntax_error(value_tok.pos, decoded)
        name = name_tok.text
        prop = entity.property(name)
        if name not in keys or prop is None:
            raise ODataQueryError(
                f"'{name}' is not a key property of type '{entity.qualified_name}'; "
                f"the key is ({', '.join(keys)})."
            )
        if name in values:
            raise ODataQueryError(f"The key property '{name}' is specified more than once.")
        values[name] = _key_value(prop, value_tok)
        i += 3
        if tokens[i].kind == fp.EOF:
            break
        if tokens[i].kind != fp.COMMA:
            raise fp.syntax_error(tokens[i].pos, decoded)
        i += 1
    missing = [k for k in keys if k not in values]
    if missing:
        raise _key_count_error(entity, f"Missing: {', '.join(missing)}.")
    return {k: values[k] for k in keys}


def literal_to_storage(prop: Property, value: Any) -> Any:
    """Convert a Python value (from a JSON body or a parsed literal) to the storage form of `prop`.

    None passes through (nullability/mandatory checks belong to the store). Raises ODataQueryError with
    ODL's conversion message when the value does not fit the property's type.
    """
    if value is None:
        return None
    edm = prop.edm_type

    def bad() -> ODataQueryError:
        return ODataQueryError(
            f"Cannot convert the literal '{value}' to the expected type '{_prop_type(prop)}' "
            f"of property '{prop.name}'."
        )

    if prop.enum_type is not None:
        if isinstance(value, str) and value in prop.enum_type.members:
            return value
        raise bad()
    if edm == EDM_STRING:
        if isinstance(value, str):
            return value
        raise bad()
    if edm in _INTEGRAL:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, float | Decimal) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, int):
            lo, hi = _INT_RANGES[edm]
            if lo <= value <= hi:
                return value
        raise bad()
    if edm == EDM_DECIMAL:
        if isinstance(value, bool):
            raise bad()
        number: float | None = None
        if isinstance(value, int | float | Decimal):
            number = float(value)
        elif isinstance(value, str):  # IEEE754Compatible=true sends decimals as strings
            try:
                number = float(Decimal(value))
            except (InvalidOperation, ValueError):
                number = None
        if number is not None and math.isfinite(number):
            return number
        raise bad()
    if edm == EDM_BOOLEAN:
        if isinstance(value, bool):
            return 1 if value else 0
        raise bad()
    if edm == EDM_DATE:
        day: str | None = None
        if isinstance(value, date) and not isinstance(value, datetime):
            day = value.isoformat()
        elif isinstance(value, str):
            day = fp.normalise_date(value)
        if day is not None:
            return day
        raise bad()
    if edm == EDM_DATETIMEOFFSET:
        moment: str | None = None
        if isinstance(value, datetime) and value.utcoffset() is not None:
            moment = fp.format_utc(value)
        elif isinstance(value, str):
            moment = fp.normalise_datetimeoffset(value)
        if moment is not None:
            return moment
        raise bad()
    if edm == EDM_GUID:
        if isinstance(value, UUID):
            return str(value)
        guid = fp.normalise_guid(value) if isinstance(value, str) else None
        if guid is not None:
            return guid
        raise bad()
    raise bad()
