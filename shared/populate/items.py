"""One record on its way to an entity (``WriteItem``): converted to the entity's types, keyed, checked for
its legal entity (the writer's; a record's own ``dataAreaId`` only where the target allows it), and how a
D365 error is classed (``unavailable``). Used by ``writer``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.d365.batch import BatchOperation
from shared.d365.errors import D365AuthError, D365Error, D365HTTPError, D365ThrottledError
from shared.populate.convert import OMIT, ConversionError, is_date_only, key_literal, to_wire
from shared.populate.metadata import EntityModel
from shared.populate.records import SourceRecord, plain
from shared.populate.results import RecordOutcome, RecordResult

__all__ = [
    "CONFLICT",
    "UNANSWERED",
    "WriteItem",
    "prepare_item",
    "refuse_repeated_keys",
    "settle",
    "unavailable",
    "url_key",
]

UNANSWERED = "unanswered"  # a write without a usable answer: maybe applied
CONFLICT = "conflict"  # a PATCH refused for its ETag (412): not applied


def unavailable(exc: D365Error) -> bool:
    """Whether ``exc`` says D365 could not be reached or would not work now (connection, timeout, 5xx,
    429 past the retries, token), rather than that it refused the request itself."""
    if not isinstance(exc, D365HTTPError):
        return True  # connection, deadline, token acquisition
    return isinstance(exc, D365ThrottledError | D365AuthError) or exc.status_code >= 500


@dataclass(eq=False)
class WriteItem:
    """One record on its way: converted values, what D365 holds, the planned write, its result."""

    source: SourceRecord
    key: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    date_only: set[str] = field(default_factory=set)  # date-time fields given as a plain date
    current: dict[str, Any] | None = None
    operation: BatchOperation | None = None
    intended: RecordOutcome | None = None
    result: RecordResult | None = None
    unsure: str | None = None  # why the last write did not settle (re-read and re-planned)
    unsure_kind: str | None = None  # UNANSWERED (maybe applied) or CONFLICT (412: not applied)
    confirmed_as: RecordOutcome | None = None  # what an unanswered earlier write meant to do
    note: str | None = None  # said with the final outcome (how it was settled)
    sends: int = 0

    def finish(self, outcome: RecordOutcome, error: str | None = None, note: str | None = None) -> None:
        self.result = RecordResult(
            self.source.number, self.key, outcome, error, self.source.line, note or self.note
        )


def _company(given: Any, legal_entity: str, allow_record_company: bool) -> str:
    """The record's legal entity: the writer's; a record's own ``dataAreaId`` only when allowed."""
    text = str(given or "").strip().lower()
    if allow_record_company or not legal_entity:
        return text or legal_entity
    if text and text != legal_entity:
        raise ConversionError(
            f"dataAreaId {text!r}: this target writes to legal entity {legal_entity!r} only "
            "(leave dataAreaId out, or set 'allow_record_company' on the route or target)"
        )
    return legal_entity


def prepare_item(
    record: SourceRecord, model: EntityModel, legal_entity: str, allow_record_company: bool
) -> WriteItem:
    """The record converted to the entity's types, with its key; a record that does not fit is finished
    ``failed`` with the reason (and its key as far as known, the legal entity the effective one)."""
    item = WriteItem(record)
    item.key = {k: plain(record.values.get(k)) for k in model.keys if k in record.values}
    try:
        if model.company_specific:
            given = record.values.get("dataAreaId")
            company = _company(given, legal_entity, allow_record_company)
            known = {**item.key, "dataAreaId": company}
            item.key = {k: known[k] for k in model.keys if k in known}  # in key order
        for name, raw in record.values.items():
            if "@" in name:
                continue  # annotations such as @odata.etag are not fields
            prop = model.field(name)
            if prop is None:
                raise ConversionError(f"field {name!r} is not a property of {model.type_name}")
            value = to_wire(prop, raw, from_text=record.from_text)
            if value is not OMIT:
                item.values[name] = value
                if prop.edm_type == "Edm.DateTimeOffset" and is_date_only(raw):
                    item.date_only.add(name)
        if model.company_specific:
            company = item.key["dataAreaId"]
            if not company:
                raise ConversionError(
                    "no legal entity: give the route or request one, or the record a dataAreaId"
                )
            item.values["dataAreaId"] = company
        missing = [k for k in model.keys if item.values.get(k) in (None, "")]
        if missing:
            raise ConversionError(
                f"key field(s) {', '.join(missing)} missing (the key of {model.entity_set} is "
                f"{', '.join(model.keys)})"
            )
    except ConversionError as exc:
        item.finish(RecordOutcome.FAILED, str(exc))
        return item
    item.key = {k: item.values[k] for k in model.keys}
    return item


def url_key(model: EntityModel, item: WriteItem) -> dict[str, Any]:
    """The key with typed values, so the key segment has the literal D365 expects for each type."""
    return {k: key_literal(model.properties[k], v) for k, v in item.key.items()}


def refuse_repeated_keys(model: EntityModel, items: list[WriteItem]) -> None:
    seen: dict[tuple[str, ...], int] = {}
    for item in items:
        if item.result is not None:
            continue
        # D365 compares keys without regard to case
        folded = tuple(str(item.key[k]).lower() for k in model.keys)
        first = seen.setdefault(folded, item.source.number)
        if first != item.source.number:
            item.finish(RecordOutcome.FAILED, f"the same key as record {first}: a key may appear once")


# -- calls


def settle(item: WriteItem, stopped: str | None) -> None:
    """The final word on a record the run could not finish (``stopped``: why the run stopped early)."""
    if item.unsure_kind == UNANSWERED:
        why = f"; {stopped}" if stopped else ""
        item.finish(
            RecordOutcome.FAILED,
            f"outcome unknown: the write may have landed ({item.unsure}){why}; sending it again is "
            "safe (it is read by key first)",
        )
    elif item.unsure_kind == CONFLICT and stopped is None:
        item.finish(
            RecordOutcome.FAILED,
            "not written: the record kept changing in D365 while it was written (ETag mismatch on "
            f"every attempt); send it again ({item.unsure})",
        )
    else:
        item.finish(RecordOutcome.NOT_ATTEMPTED, stopped or "not written")
