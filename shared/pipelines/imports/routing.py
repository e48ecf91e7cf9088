"""Which route an inbound blob belongs to, and the legal entity it is for (pure; no I/O).

The longest configured prefix that starts the blob name wins. The legal entity comes from the route, from the
first sub-folder under the prefix (``{prefix}{company}/{file}``) or from a token of the file name
(``ORDERS_usmf_2024.csv`` with separator ``_`` and token 1), so one route serves many companies (RIS's
multi-company import, peers §2.1). A name that matches no route, lacks the legal entity or has a file type
no route can send is a :class:`RoutingError` with a stable ``reason_code`` for the status record.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from shared.pipelines.imports.settings import Route

__all__ = ["InputKind", "RouteMatch", "RoutingError", "input_kind", "resolve"]

_LEGAL_ENTITY = re.compile(r"^[A-Za-z0-9]{1,10}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
RAW_EXTENSIONS = (".csv", ".txt", ".xml", ".xlsx")
RECORD_EXTENSIONS = (".csv", ".txt", ".json", ".ndjson", ".jsonl")  # odata / service routes (shared/populate)


class InputKind:
    ZIP = "zip"  # a ready data package, or a bundle of raw files (decided by the presence of Manifest.xml)
    RAW = "raw"  # one data file
    RECORDS = "records"  # a small file of records for an odata / service route


class RoutingError(Exception):
    """The blob cannot be routed; ``reason_code`` is stable (it goes into the status record)."""

    def __init__(self, reason_code: str, message: str, *, route: str | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.message = message
        self.route = route


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    legal_entity: str  # lower case; "" = the D365 default company of the caller
    file_name: str  # the last path segment: the original file name (kept in the package and the ext. id)
    kind: str  # InputKind


def input_kind(file_name: str) -> str | None:
    lowered = file_name.lower()
    if lowered.endswith(".zip"):
        return InputKind.ZIP
    if lowered.endswith(RAW_EXTENSIONS):
        return InputKind.RAW
    return None


def _legal_entity(route: Route, rest: str, file_name: str) -> str:
    if route.legal_entity_from == "folder":
        parts = rest.split("/")
        if len(parts) == 2:
            found = parts[0]
        elif len(parts) == 1 and route.legal_entity:
            return route.legal_entity
        else:
            raise RoutingError(
                "legal_entity_missing",
                f"route {route.name!r} takes the legal entity from the sub-folder: drop the file as "
                f"{route.prefix}<legal entity>/{file_name}",
                route=route.name,
            )
        where = f"sub-folder {found!r}"
    elif route.legal_entity_from == "file_name":
        stem = file_name.rsplit(".", 1)[0]
        tokens = stem.split(route.file_name_separator)
        if len(tokens) <= route.file_name_token:
            if route.legal_entity:
                return route.legal_entity
            raise RoutingError(
                "legal_entity_missing",
                f"route {route.name!r} takes the legal entity from token {route.file_name_token} of the file "
                f"name split on {route.file_name_separator!r}; {file_name!r} has only {len(tokens)} token(s)",
                route=route.name,
            )
        found = tokens[route.file_name_token]
        where = f"file-name token {found!r}"
    else:
        return route.legal_entity
    if not _LEGAL_ENTITY.match(found):
        raise RoutingError(
            "legal_entity_invalid",
            f"{where} is not a legal entity id (1-10 letters or digits)",
            route=route.name,
        )
    return found.lower()


def resolve(routes: Iterable[Route], blob_name: str) -> RouteMatch:
    """The route, legal entity and file name for ``blob_name`` (relative to the inbound container)."""
    candidates = [r for r in routes if blob_name.startswith(r.prefix)]
    if not candidates:
        raise RoutingError(
            "unknown_route",
            f"no import route serves {blob_name!r}: configure a route whose prefix is its folder "
            "(IMPORT_ROUTES)",
        )
    route = max(candidates, key=lambda r: len(r.prefix))
    rest = blob_name[len(route.prefix) :]
    file_name = rest.rsplit("/", 1)[-1]
    if not file_name or file_name in (".", "..") or _CONTROL.search(file_name):
        raise RoutingError("invalid_file_name", f"{blob_name!r} has no usable file name", route=route.name)
    if route.populate is not None:
        if not file_name.lower().endswith(RECORD_EXTENSIONS):
            raise RoutingError(
                "unsupported_file_type",
                f"{file_name!r}: route {route.name!r} writes records from .csv, .txt, .json, .ndjson or "
                ".jsonl files",
                route=route.name,
            )
        return RouteMatch(route, _legal_entity(route, rest, file_name), file_name, InputKind.RECORDS)
    kind = input_kind(file_name)
    if kind is None:
        raise RoutingError(
            "unsupported_file_type",
            f"{file_name!r}: only data packages (.zip) and data files (.csv, .txt, .xml, .xlsx) are imported",
            route=route.name,
        )
    if kind == InputKind.RAW and route.accept == "package":
        raise RoutingError(
            "unsupported_file_type",
            f"route {route.name!r} accepts data packages (.zip) only; {file_name!r} is a data file",
            route=route.name,
        )
    return RouteMatch(route, _legal_entity(route, rest, file_name), file_name, kind)
