"""Built-in ``enrich`` handler: read the D365 record an event refers to (and related rows) through OData,
and store the event together with that data as one JSON document.

    {"type": "enrich", "entity_set": "SalesInvoiceHeadersV2",
     "key": {"dataAreaId": "{legal_entity}", "InvoiceNumber": "{InvoiceId}"},
     "select": [...], "expand": ["..."],
     "related": [{"name": "lines", "entity_set": "SalesInvoiceLinesV2",
                  "match": {"dataAreaId": "{legal_entity}", "InvoiceNumber": "{InvoiceId}"},
                  "select": [...]}],
     "cross_company": true, "container": "events-enriched", "path": "<layout template>"}

Reads go through the app's ``ODataClient`` (one transport, one retry policy). The document is overwritten
on a repeat, so a replay refreshes it with the record as it is now. ``cross_company`` defaults to true
because the key names the company (ref §1.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.d365.odata_query import F, Filter
from shared.events.handler_api import HandlerContext, HandlerResult
from shared.events.layout import RAW_TEMPLATE
from shared.events.model import BusinessEvent
from shared.events.templates import render, render_mapping, render_path
from shared.status import utc_now

__all__ = ["Enrich"]


def _names(options: Mapping[str, Any], name: str) -> list[str] | None:
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name} must be a list of property names")
    return list(value)


def _templates(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not value or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{what} must be an object: property name -> value or {{field}} template")
    return dict(value)


@dataclass(frozen=True)
class _Related:
    name: str
    entity_set: str
    match: dict[str, Any]
    select: list[str] | None

    @classmethod
    def parse(cls, raw: object) -> _Related:
        if not isinstance(raw, dict):
            raise ValueError("each related entry must be an object")
        name, entity_set = raw.get("name"), raw.get("entity_set")
        if not isinstance(name, str) or not name or not isinstance(entity_set, str) or not entity_set:
            raise ValueError("a related entry needs a name and an entity_set")
        extra = set(raw) - {"name", "entity_set", "match", "select"}
        if extra:
            raise ValueError(f"a related entry does not take {', '.join(sorted(extra))}")
        return cls(name, entity_set, _templates(raw.get("match"), "match"), _names(raw, "select"))


class Enrich:
    def __init__(self, options: Mapping[str, Any]) -> None:
        entity_set = options.get("entity_set")
        if not isinstance(entity_set, str) or not entity_set:
            raise ValueError("entity_set must name an OData entity set")
        self.entity_set = entity_set
        self.key = _templates(options.get("key"), "key")
        self.select = _names(options, "select")
        self.expand = _names(options, "expand")
        related = options.get("related") or []
        if not isinstance(related, list):
            raise ValueError("related must be a list")
        self.related = [_Related.parse(item) for item in related]
        if len({r.name for r in self.related}) != len(self.related):
            raise ValueError("related names must be unique")
        self.cross_company = options.get("cross_company", True)
        if not isinstance(self.cross_company, bool):
            raise ValueError("cross_company must be true or false")
        self.container = options.get("container")
        self.path = options.get("path", RAW_TEMPLATE)
        if self.container is not None and not isinstance(self.container, str):
            raise ValueError("container must be a container name")
        if not isinstance(self.path, str) or not self.path:
            raise ValueError("path must be a template string")

    def __call__(self, event: BusinessEvent, context: HandlerContext) -> HandlerResult:
        values = event.template_values()
        odata = context.app.odata
        key = render_mapping(self.key, values)
        record = odata.get(
            self.entity_set,
            key,
            select=self.select,
            expand=self.expand,
            cross_company=self.cross_company,
        )
        related: dict[str, list[dict[str, Any]]] = {}
        for item in self.related:
            condition: Filter | None = None
            for field_name, template in item.match.items():
                clause = F(field_name) == render(template, values)
                condition = clause if condition is None else condition & clause
            related[item.name] = list(
                odata.list(
                    item.entity_set, filter=condition, select=item.select, cross_company=self.cross_company
                )
            )
        document = {
            "event": event.document(),
            "source": {"entity_set": self.entity_set, "key": key},
            "record": record,
            "related": related,
            "enriched_at": utc_now(),
            "out_of_order": context.sequence.out_of_order,
        }
        container = self.container or context.settings.enriched_container
        name = render_path(self.path, values)
        context.app.store.write_json(container, name, document)
        rows = sum(len(rows) for rows in related.values())
        summary = f"{self.entity_set} record and {rows} related row(s) stored in {container}/{name}"
        return HandlerResult(summary, (f"{container}/{name}",))
