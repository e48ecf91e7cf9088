"""The files the demo drops into the inbound container, and the route each one goes through.

Every file carries the run's stamp in its name and content, so the import ledger sees new content on every
run (a file dropped again unchanged is recorded as a duplicate and not imported twice: that is the app's
exactly-once rule, not what the demo wants to show). A data package gets the stamp as its zip comment,
which leaves every entry as it was.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localstack.processes import ROOT
from shared.pipelines.imports.settings import ImportSettings, Route
from shared.populate.config import EntityTarget
from shared.populate.settings import HttpTarget, PopulateSettings

__all__ = [
    "DEFAULT_COMPANY",
    "SAMPLE_PACKAGE",
    "DemoFile",
    "customer_groups_file",
    "customers_with_errors_file",
    "drop_name",
    "package_file",
    "pick_http_target",
    "pick_populate_route",
    "pick_route",
    "records_file",
]

#: Microsoft's sample data package (Fixed asset major type, UTF-16 manifest), as published.
SAMPLE_PACKAGE = ROOT / "tests" / "data" / "samples" / "packages" / "usmf_asset-major-types-01.zip"
DEFAULT_COMPANY = "usmf"


@dataclass(frozen=True)
class DemoFile:
    """One input: where it is dropped (inbound-relative) and its bytes."""

    route: Route
    name: str  # blob name in the inbound container
    data: bytes

    @property
    def file_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _entities(route: Route) -> set[str]:
    names = {e.entity.lower() for e in route.entities}
    return names | ({route.entity.lower()} if route.entity else set())


def pick_route(settings: ImportSettings, *, entity: str | None = None, package: bool = False) -> Route | None:
    """The route a demo file goes through: raw files of ``entity`` (recurring routes first), or ready data
    packages (routes that take only packages first). None when IMPORT_ROUTES has no such route."""
    dmf = [r for r in settings.routes if r.populate is None]  # odata/service routes write record by record
    if package:
        candidates = [r for r in dmf if r.accept != "raw" and (not r.is_recurring or r.send_as == "package")]
        candidates.sort(key=lambda r: r.accept != "package")
    else:
        wanted = (entity or "").lower()
        candidates = [r for r in dmf if r.accept != "package" and wanted in _entities(r)]
        candidates.sort(key=lambda r: not r.is_recurring)
    return candidates[0] if candidates else None


def _entity_target(route: Route) -> EntityTarget | None:
    return route.populate.entity if route.target == "odata" and route.populate is not None else None


def pick_populate_route(settings: ImportSettings, entity_set: str) -> Route | None:
    """The ``odata`` route that writes files to ``entity_set`` (an ``upsert`` one first)."""
    targets = [(r, t) for r in settings.routes if (t := _entity_target(r)) is not None]
    candidates = [(r, t) for r, t in targets if t.entity_set.lower() == entity_set.lower()]
    candidates.sort(key=lambda found: found[1].mode != "upsert")
    return candidates[0][0] if candidates else None


def pick_http_target(settings: PopulateSettings, entity_set: str) -> HttpTarget | None:
    """The ``POPULATE_HTTP_TARGETS`` entry that writes to ``entity_set`` and can create (``upsert`` first)."""
    candidates = [
        t
        for t in settings.http_targets
        if t.entity.entity_set.lower() == entity_set.lower() and t.entity.mode != "update"
    ]
    candidates.sort(key=lambda t: t.entity.mode != "upsert")
    return candidates[0] if candidates else None


def drop_name(route: Route, stem: str, stamp: str, extension: str) -> str:
    """``{prefix}[{company}/]{stem}-{stamp}.{ext}``, with the company where the route reads it from."""
    company = route.legal_entity or DEFAULT_COMPANY
    if route.legal_entity_from == "folder":
        return f"{route.prefix}{company}/{stem}-{stamp}.{extension}"
    if route.legal_entity_from == "file_name":
        tokens = [stem] * (route.file_name_token + 1) + [stamp]
        tokens[route.file_name_token] = company
        return f"{route.prefix}{route.file_name_separator.join(tokens)}.{extension}"
    return f"{route.prefix}{stem}-{stamp}.{extension}"


def customer_groups_file(route: Route, stamp: str) -> DemoFile:
    """Two customer groups, the README's example: a raw CSV D365 imports without a complaint."""
    rows = [
        ["CUSTOMERGROUPID", "DESCRIPTION", "PAYMENTTERMID"],
        ["DEMO1", f"Demo group 1 (run {stamp})", "Net30"],
        ["DEMO2", f"Demo group 2 (run {stamp})", "Net45"],
    ]
    return DemoFile(route, drop_name(route, "demo-customer-groups", stamp, "csv"), _csv(rows))


def customers_with_errors_file(route: Route, stamp: str) -> DemoFile:
    """Three customers; D365 takes one and refuses two rows: an unknown customer group (staging → target)
    and a credit limit that is not a number (source → staging)."""
    rows = [
        ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE", "CREDITLIMIT"],
        ["DEMO-C1", f"Demo customer (run {stamp})", "10", "USD", "1000"],
        ["DEMO-C2", f"Customer of an unknown group (run {stamp})", "NOGROUP", "USD", "500"],
        ["DEMO-C3", f"Customer with a bad credit limit (run {stamp})", "10", "USD", "ten"],
    ]
    return DemoFile(route, drop_name(route, "demo-customers", stamp, "csv"), _csv(rows))


def package_file(route: Route, stamp: str, source: Path = SAMPLE_PACKAGE) -> DemoFile:
    """A ready data package (``source``), stamped with the run in its zip comment."""
    buffer = io.BytesIO(source.read_bytes())
    with zipfile.ZipFile(buffer, "a") as package:
        package.comment = f"demo run {stamp}".encode("ascii")
    return DemoFile(route, drop_name(route, source.stem, stamp, "zip"), buffer.getvalue())


def records_file(route: Route, stem: str, stamp: str, records: Sequence[Mapping[str, Any]]) -> DemoFile:
    """``records`` (entity field -> value) as a file the ``odata``/``service`` route reads: CSV unless the
    route reads JSON or NDJSON, in its delimiter, encoding, column names (``field_map``) and ``columns``."""
    assert route.populate is not None
    fmt = route.populate.records
    to_column = {field: column for column, field in (fmt.field_map or {}).items()}
    rows = [{to_column.get(name, name): value for name, value in record.items()} for record in records]
    if fmt.input_format in ("json", "ndjson"):
        lines = [json.dumps(row) for row in rows]
        text = "\n".join(lines) + "\n" if fmt.input_format == "ndjson" else f"[{', '.join(lines)}]\n"
        return DemoFile(
            route, drop_name(route, stem, stamp, fmt.input_format), text.encode(fmt.encoding or "utf-8")
        )
    header = list(fmt.columns or dict.fromkeys(column for row in rows for column in row))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, delimiter=fmt.delimiter, lineterminator="\r\n")
    if not fmt.columns:
        writer.writerow(header)
    writer.writerows([["" if row.get(c) is None else str(row[c]) for c in header] for row in rows])
    data = buffer.getvalue().encode(fmt.encoding or "utf-8")
    return DemoFile(route, drop_name(route, stem, stamp, "csv"), data)
