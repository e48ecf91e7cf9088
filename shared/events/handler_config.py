"""The handler configuration (``BUSINESS_EVENTS_HANDLERS``): which handlers run for which business event.

JSON object: business event id (or ``"*"`` for every event without its own entry) → one handler object or
a list of them, run in order. Each handler object has a ``type`` (``archive``, ``forward_http``,
``forward_blob``, ``enrich``, or a type registered from Python), an optional ``name`` (how it appears in
status records; default ``<type>`` or ``<type>#<n>``), ``when_out_of_order`` (``run``, the default, or
``skip`` for handlers that must not apply a stale state change) and the type's own options::

    {"SalesInvoicePostedBusinessEvent": [
        {"type": "enrich", "entity_set": "SalesInvoiceHeadersV2",
         "key": {"dataAreaId": "{legal_entity}", "InvoiceNumber": "{InvoiceId}"},
         "related": [{"name": "lines", "entity_set": "SalesInvoiceLinesV2",
                      "match": {"dataAreaId": "{legal_entity}", "InvoiceNumber": "{InvoiceId}"}}]},
        {"type": "forward_http", "url_setting": "ERP_EVENTS_URL", "when_out_of_order": "skip"}],
     "*": {"type": "archive"}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BUILTIN_OPTIONS", "DEFAULT_KEY", "HandlerSpec", "parse_handler_config"]

DEFAULT_KEY = "*"
_COMMON = frozenset({"type", "name", "when_out_of_order"})

#: Options each built-in handler type accepts, and which of them it requires.
BUILTIN_OPTIONS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "archive": (frozenset(), frozenset()),
    "forward_http": (
        frozenset({"url", "url_setting", "headers", "secret_headers", "body", "timeout_seconds", "attempts"}),
        frozenset(),
    ),
    "forward_blob": (frozenset({"container", "path", "body"}), frozenset({"container"})),
    "enrich": (
        frozenset({"entity_set", "key", "select", "expand", "related", "cross_company", "container", "path"}),
        frozenset({"entity_set", "key"}),
    ),
}


@dataclass(frozen=True)
class HandlerSpec:
    """One configured handler: its type, its unique name within the event's list, and its options."""

    type: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    skip_out_of_order: bool = False


def _spec(raw: object, where: str, index: int, count: int, known_types: set[str]) -> tuple[HandlerSpec, str]:
    if not isinstance(raw, dict):
        return HandlerSpec("archive", "archive"), f"{where}: each handler must be a JSON object"
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in known_types:
        known = ", ".join(sorted(known_types))
        return HandlerSpec("archive", "archive"), f"{where}: unknown handler type {kind!r} (known: {known})"
    problem = ""
    when = raw.get("when_out_of_order", "run")
    if when not in ("run", "skip"):
        problem = f"{where}: when_out_of_order must be 'run' or 'skip'"
    if kind in BUILTIN_OPTIONS:
        allowed, required = BUILTIN_OPTIONS[kind]
        unknown = sorted(set(raw) - allowed - _COMMON)
        missing = sorted(required - set(raw))
        if unknown:
            problem = f"{where}: {kind} does not take {', '.join(unknown)}"
        elif missing:
            problem = f"{where}: {kind} needs {', '.join(missing)}"
        elif kind == "forward_http" and ("url" in raw) == ("url_setting" in raw):
            problem = f"{where}: forward_http needs exactly one of url and url_setting"
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        name = kind if count == 1 else f"{kind}#{index + 1}"
    options = {k: v for k, v in raw.items() if k not in _COMMON}
    return HandlerSpec(kind, name, options, when == "skip"), problem


def parse_handler_config(
    text: str | None, known_types: set[str]
) -> tuple[dict[str, tuple[HandlerSpec, ...]], list[str]]:
    """Parse the JSON; return (event id → handler specs, problems). Unlisted events use ``"*"``."""
    if not text:
        return {}, []
    try:
        raw = json.loads(text)
    except ValueError as exc:
        return {}, [f"not valid JSON ({exc})"]
    if not isinstance(raw, dict):
        return {}, ["expected a JSON object: business event id -> handler or list of handlers"]
    config: dict[str, tuple[HandlerSpec, ...]] = {}
    problems: list[str] = []
    for event_id, value in raw.items():
        entries = value if isinstance(value, list) else [value]
        specs = []
        for index, entry in enumerate(entries):
            spec, problem = _spec(entry, f"{event_id}[{index}]", index, len(entries), known_types)
            specs.append(spec)
            if problem:
                problems.append(problem)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            problems.append(f"{event_id}: handler names must be unique within one event")
        config[str(event_id)] = tuple(specs)
    return config, problems
