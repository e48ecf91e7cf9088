"""GET below /data: collections with server-driven paging, single entities, navigations, properties, $count.

Paging is keyset-based: every page is ordered by the requested $orderby plus the key as tie-breaker, and
``@odata.nextLink`` carries an opaque ``$skiptoken`` holding the sort values of the page's last row, so page
n costs the same as page 1 even on a million rows (ref §1.4; the token form is UNCONFIRMED, clients must
treat the link as opaque). Rows are rendered to JSON by SQLite (see serialize.py) and joined, never parsed.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from emulator.odata.errors import ODataError, bad_request, not_found
from emulator.odata.messages import (
    ODATA_JSON,
    ODataRequest,
    ODataResponse,
    empty_response,
    json_response,
    parse_prefer,
)
from emulator.odata.query import (
    SqlFragment,
    compile_filter,
    compile_orderby,
    parse_count,
    parse_expand,
    parse_select,
    parse_skip,
    parse_top,
)
from emulator.odata.schema import Catalog, EntityType, Navigation, Property
from emulator.odata.serialize import expand_sql, row_json_sql, storage_to_json
from emulator.odata.store import ODataStore, Row, etag_for, quote_ident

MAX_PAGE_SIZE = 10_000  # ref §1.4
BOM = b"\xef\xbb\xbf"  # the /$count reply starts with one (ref §1.3, third-party measured)
QUERY_OPTIONS = frozenset(
    {"$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$format", "$skiptoken"}
)
_COLLECTION_ONLY = ("$filter", "$orderby", "$count", "$skip", "$top", "$skiptoken")


@dataclass
class QueryOptions:
    """The system query options of one request, checked for unknown names and repeats."""

    values: dict[str, str] = field(default_factory=dict)
    cross_company: bool = False
    pairs: list[tuple[str, str]] = field(default_factory=list)  # everything, in request order

    @classmethod
    def parse(cls, pairs: Sequence[tuple[str, str]]) -> QueryOptions:
        options = cls(pairs=list(pairs))
        for name, value in pairs:
            if name.startswith("$"):
                if name not in QUERY_OPTIONS:
                    raise bad_request(f"The query parameter '{name}' is not supported.")
                if name in options.values:
                    raise bad_request(
                        f"Query option '{name}' was specified more than once, but it must be "
                        "specified at most once."
                    )
                options.values[name] = value
            elif name.lower() == "cross-company":
                options.cross_company = value.strip().lower() == "true"
        fmt = options.values.get("$format")
        if fmt is not None and fmt.split(";")[0].strip().lower() not in ("json", "application/json"):
            raise ODataError(406, f"The requested format '{fmt}' is not supported; use $format=json.")
        return options

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def reject_collection_options(self) -> None:
        for name in _COLLECTION_ONLY:
            if name in self.values:
                raise bad_request(
                    "The query specified in the URI is not valid. The requested resource is not a "
                    "collection. Query options $filter, $orderby, $count, $skip, and $top can be applied "
                    "only on collections."
                )


def sort_expr(prop: Property, alias: str) -> str:
    """The value rows are ordered by: as compile_orderby orders (enums by member value, strings NOCASE)."""
    column = f"{alias}.{quote_ident(prop.name)}"
    if prop.enum_type is not None:
        whens = " ".join(f"WHEN '{m}' THEN {i}" for i, m in enumerate(prop.enum_type.members))
        return f"CASE {column} {whens} END"
    return column  # string columns are declared COLLATE NOCASE, so the key index serves the order


def order_plan(
    entity: EntityType, orderby: str | None, fixed: Set[str] = frozenset()
) -> list[tuple[str, bool]]:
    """[(sort expression, descending)], the requested order followed by the key as tie-breaker.

    Columns the scope pins to one value (``fixed``: dataAreaId of the default company, navigation joins) are
    left out: ordering by a constant changes nothing, and without them SQLite seeks the key index directly.
    """
    plan: list[tuple[str, bool]] = []
    used: set[str] = set(fixed)
    if orderby:
        compile_orderby(orderby, entity)  # validates, with the compiler's messages
        for item in orderby.split(","):
            words = item.split()
            prop = entity.property(words[0])
            assert prop is not None
            if prop.name not in used:
                used.add(prop.name)
                plan.append((sort_expr(prop, "t"), len(words) > 1 and words[1].lower() == "desc"))
    for key in entity.keys:
        if key not in used:
            prop = entity.property(key)
            assert prop is not None
            plan.append((sort_expr(prop, "t"), False))
    return plan or [('t."_RecId"', False)]


def encode_token(values: Sequence[Any]) -> str:
    raw = json.dumps(list(values), separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_token(token: str, width: int) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != width:
        raise bad_request(
            f"The $skiptoken '{token}' is not valid for this query; follow @odata.nextLink as is."
        )
    return values


def after_condition(plan: Sequence[tuple[str, bool]], values: Sequence[Any]) -> SqlFragment:
    """Rows strictly after ``values`` in ``plan`` order (NULLs sort first ascending, last descending)."""
    if not any(desc for _, desc in plan) and all(v is not None for v in values):
        # a row-value comparison lets SQLite seek in the key index: constant time per page
        return SqlFragment(
            f"({', '.join(e for e, _ in plan)}) > ({', '.join('?' * len(plan))})", list(values)
        )
    ors: list[str] = []
    params: list[Any] = []
    for i, (expr, desc) in enumerate(plan):
        parts: list[str] = []
        for prev_expr, _ in plan[:i]:
            parts.append(f"{prev_expr} IS ?")
        params.extend(values[:i])
        value = values[i]
        if value is None:
            parts.append("0" if desc else f"{expr} IS NOT NULL")
        else:
            parts.append(f"({expr} < ? OR {expr} IS NULL)" if desc else f"{expr} > ?")
            params.append(value)
        ors.append("(" + " AND ".join(parts) + ")")
    return SqlFragment("(" + " OR ".join(ors) + ")", params)


def page_size(request: ODataRequest) -> tuple[int, list[tuple[str, str]]]:
    """10,000 rows, or ``Prefer: odata.maxpagesize=N`` capped at that (UNCONFIRMED in D365, ref §1.4)."""
    wanted = parse_prefer(request.header("prefer")).get("odata.maxpagesize")
    if wanted and wanted.isdigit() and int(wanted) > 0:
        size = min(int(wanted), MAX_PAGE_SIZE)
        return size, [("Preference-Applied", f"odata.maxpagesize={size}")]
    return MAX_PAGE_SIZE, []


class Reader:
    """Answers the GET requests of one ODataService (stateless apart from the store)."""

    def __init__(self, store: ODataStore) -> None:
        self.store = store
        self.catalog: Catalog = store.catalog

    # --- collections ------------------------------------------------------------------------------------

    def scope(self, entity: EntityType, request: ODataRequest, options: QueryOptions) -> dict[str, Any]:
        """Default-company filter unless cross-company=true (ref §1.2, following [S3]): {column: value}."""
        if entity.company_specific and not options.cross_company:
            return {"dataAreaId": request.company}
        return {}

    def where(self, entity: EntityType, options: QueryOptions, scope: Mapping[str, Any]) -> SqlFragment:
        parts = [SqlFragment(f"t.{quote_ident(name)} = ?", [value]) for name, value in scope.items()]
        text = options.get("$filter")
        if text is not None:
            parts.append(compile_filter(text, entity, self.catalog, alias="t"))
        if not parts:
            return SqlFragment("", [])
        return SqlFragment(
            "WHERE " + " AND ".join(p.sql for p in parts), [v for p in parts for v in p.params]
        )

    def row_json(self, entity: EntityType, options: QueryOptions) -> tuple[str, list[str] | None]:
        select_text = options.get("$select")
        select = parse_select(select_text, entity) if select_text is not None else None
        expands: list[tuple[str, str]] = []
        expand_text = options.get("$expand")
        if expand_text is not None:
            for i, item in enumerate(parse_expand(expand_text, entity, self.catalog)):
                expands.append(
                    (
                        item.navigation.name,
                        expand_sql(item.navigation, self.catalog, "t", f"x{i}", item.select),
                    )
                )
        return row_json_sql(entity, "t", select, expands), select

    def collection(
        self,
        request: ODataRequest,
        entity: EntityType,
        options: QueryOptions,
        scope: Mapping[str, Any],
    ) -> ODataResponse:
        top = parse_top(options.get("$top"))
        skip = parse_skip(options.get("$skip")) or 0
        want_count = parse_count(options.get("$count"))
        where = self.where(entity, options, scope)
        json_sql, select = self.row_json(entity, options)
        plan = order_plan(entity, options.get("$orderby"), set(scope))
        size, applied = page_size(request)

        conditions, params = [where.sql] if where.sql else [], list(where.params)
        token = options.get("$skiptoken")
        if token is not None:
            after = after_condition(plan, decode_token(token, len(plan)))
            conditions.append(("AND " if conditions else "WHERE ") + after.sql)
            params += after.params
            skip = 0  # the token already positions the page; $skip applied to the first page only
        want = size if top is None else min(size, top)
        more_possible = top is None or top > want
        order_sql = ", ".join(f"{expr} {'DESC' if desc else 'ASC'}" for expr, desc in plan)
        extras = ", ".join(expr for expr, _ in plan)
        sql = (
            f"SELECT {json_sql}, {extras} FROM {quote_ident(entity.set_name)} AS t {' '.join(conditions)} "
            f"ORDER BY {order_sql} LIMIT ? OFFSET ?"
        )
        conn = self.store.connection()
        rows = conn.execute(sql, [*params, want + (1 if more_possible else 0), skip]).fetchall()

        count: int | None = None
        if want_count:
            count = conn.execute(
                f"SELECT COUNT(*) FROM {quote_ident(entity.set_name)} AS t {where.sql}", where.params
            ).fetchone()[0]
        next_link = None
        if len(rows) > want:
            rows = rows[:want]
            last = rows[-1][1:]
            drop = {"$skip", "$skiptoken", "$top"}
            pairs = [(k, v) for k, v in options.pairs if k not in drop]
            if top is not None:
                pairs.append(("$top", str(top - want)))
            pairs.append(("$skiptoken", encode_token(last)))
            next_link = f"{request.service_root}/{request.path}?{_encode_query(pairs)}"

        context = f"{request.service_root}/$metadata#{entity.set_name}{_select_suffix(select)}"
        out = ['{"@odata.context":', json.dumps(context)]
        if count is not None:
            out.append(f',"@odata.count":{count}')
        out.append(',"value":[')
        out.append(",".join(row[0] for row in rows))
        out.append("]")
        if next_link:
            out += [',"@odata.nextLink":', json.dumps(next_link)]
        out.append("}")
        return ODataResponse(
            200,
            [("Content-Type", ODATA_JSON), ("OData-Version", "4.0"), *applied],
            "".join(out).encode("utf-8"),
        )

    def count(
        self,
        request: ODataRequest,
        entity: EntityType,
        options: QueryOptions,
        scope: Mapping[str, Any],
    ) -> ODataResponse:
        where = self.where(entity, options, scope)
        count = (
            self.store.connection()
            .execute(f"SELECT COUNT(*) FROM {quote_ident(entity.set_name)} AS t {where.sql}", where.params)
            .fetchone()[0]
        )
        return _plain_text(BOM + str(count).encode("ascii"))

    # --- single entities ----------------------------------------------------------------------------------

    def entity(
        self, request: ODataRequest, entity: EntityType, key: dict[str, Any], options: QueryOptions
    ) -> ODataResponse:
        options.reject_collection_options()
        response = self.single(request, entity, options, _equal_to(key))
        if response is None:
            raise _segment_not_found(entity)
        return response

    def single(
        self, request: ODataRequest, entity: EntityType, options: QueryOptions, conditions: list[SqlFragment]
    ) -> ODataResponse | None:
        json_sql, select = self.row_json(entity, options)
        where = " AND ".join(c.sql for c in conditions)
        row = (
            self.store.connection()
            .execute(
                f'SELECT {json_sql}, t."_RecVersion", t."_RecId" FROM {quote_ident(entity.set_name)} AS t '
                f"WHERE {where} LIMIT 1",
                [v for c in conditions for v in c.params],
            )
            .fetchone()
        )
        if row is None:
            return None
        context = f"{request.service_root}/$metadata#{entity.set_name}{_select_suffix(select)}/$entity"
        body = '{"@odata.context":' + json.dumps(context) + "," + row[0][1:]
        headers = [("Content-Type", ODATA_JSON), ("OData-Version", "4.0")]
        if entity.etag:
            headers.append(("ETag", etag_for(row[1], row[2])))
        return ODataResponse(200, headers, body.encode("utf-8"))

    def navigation(
        self,
        request: ODataRequest,
        entity: EntityType,
        key: dict[str, Any],
        nav: Navigation,
        options: QueryOptions,
        *,
        count: bool = False,
    ) -> ODataResponse:
        parent = self._stored(entity, key)
        target = self.catalog.entities[nav.target_set]
        join = {remote: parent[local] for local, remote in nav.on}
        if count:
            return self.count(request, target, options, join)
        if nav.collection:
            return self.collection(request, target, options, join)
        options.reject_collection_options()
        response = self.single(request, target, options, _equal_to(join))
        return response if response is not None else empty_response(204)

    def _stored(self, entity: EntityType, key: dict[str, Any]) -> Row:
        row = self.store.fetch(self.store.connection(), entity, key)
        if row is None:
            raise _segment_not_found(entity)
        return row

    def property(
        self,
        request: ODataRequest,
        entity: EntityType,
        key: dict[str, Any],
        prop: Property,
        key_text: str,
        *,
        raw: bool = False,
    ) -> ODataResponse:
        value = storage_to_json(prop, self._stored(entity, key)[prop.name])
        if raw:
            if value is None:
                return empty_response(204)
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            return _plain_text(text.encode("utf-8"))
        context = f"{request.service_root}/$metadata#{entity.set_name}({key_text})/{prop.name}"
        return json_response(200, {"@odata.context": context, "value": value})


def _segment_not_found(entity: EntityType) -> ODataError:
    return not_found(f"Resource not found for the segment '{entity.set_name}'.")


def _equal_to(values: Mapping[str, Any]) -> list[SqlFragment]:
    """Conditions matching a row on every column of ``values`` (a key, or a navigation's join)."""
    return [SqlFragment(f"t.{quote_ident(k)} = ?", [v]) for k, v in values.items()]


def _plain_text(body: bytes) -> ODataResponse:
    return ODataResponse(200, [("Content-Type", "text/plain; charset=utf-8"), ("OData-Version", "4.0")], body)


def _select_suffix(select: list[str] | None) -> str:
    return f"({','.join(select)})" if select else ""


def _encode_query(pairs: Sequence[tuple[str, str]]) -> str:
    return urlencode(list(pairs), quote_via=quote, safe="$',()*:/@")
