"""Write records to one OData entity set: read by key, plan create / PATCH / nothing, send in ``$batch``.

Flow per run: convert each record (``convert``) → read the current rows by key (a read-only ``$batch`` of
GETs, retried freely) → plan: absent → POST (modes create, upsert), present → PATCH of the differing fields
guarded by the row's ETag (update, upsert) or nothing when D365 already holds the values (``unchanged``)
→ send the writes in changesets of ``changeset_size`` (or one per record, or one for all).

Safety when something goes wrong:
- a changeset that fails rolls back only its members: the failing record gets D365's message, the others
  are sent again on their own (unless the target is all-or-nothing), so one bad record sinks no other;
- 429 on the whole ``$batch`` (after the transport's own retries) or on a changeset: D365 applied nothing,
  the same writes are sent again after ``Retry-After``;
- an unanswered ``$batch`` (5xx, dropped connection: maybe applied, maybe not) is never re-sent blindly:
  its records are read again by key and re-planned, so a create that did land is found and reported as
  created, never made twice; the same for a PATCH whose ETag no longer matches (412).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.d365.batch import BatchOperation, BatchRequest, OperationResult
from shared.d365.bulk import DEFAULT_RETRY_AFTER
from shared.d365.errors import D365Error, D365ThrottledError
from shared.d365.odata import ODataClient
from shared.d365.odata_query import entity_path
from shared.populate.config import EntityTarget
from shared.populate.convert import OMIT, ConversionError, same_value, to_wire
from shared.populate.metadata import EntityModel
from shared.populate.records import SourceRecord
from shared.populate.results import PopulateResult, RecordOutcome, RecordResult

__all__ = ["EntityWriter"]

log = logging.getLogger(__name__)
MAX_BATCH_OPERATIONS = 1000  # per $batch request (D365 allows 5,000); all-or-nothing may need more
MAX_RESENDS = 10
_MINIMAL = {"Prefer": "return=minimal"}
VERIFY_ROUNDS = 2


@dataclass(eq=False)
class _Item:
    source: SourceRecord
    key: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    current: dict[str, Any] | None = None
    operation: BatchOperation | None = None
    intended: RecordOutcome | None = None
    result: RecordResult | None = None
    unsure: str | None = None  # why the last write's outcome is unknown (read back and re-planned)
    confirmed_as: RecordOutcome | None = None  # what an unsure earlier write meant to do
    sends: int = 0

    def finish(self, outcome: RecordOutcome, error: str | None = None, note: str | None = None) -> None:
        self.result = RecordResult(self.source.number, self.key, outcome, error, self.source.line, note)


def _chunks(items: list[_Item], size: int) -> Iterator[list[_Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class EntityWriter:
    """Writes records to ``model.entity_set`` as configured by ``target`` (see the module docstring)."""

    def __init__(
        self,
        odata: ODataClient,
        model: EntityModel,
        target: EntityTarget,
        *,
        legal_entity: str = "",
        sleep: Callable[[float], None] = time.sleep,
        max_batch_operations: int = MAX_BATCH_OPERATIONS,
    ) -> None:
        self.odata, self.model, self.target = odata, model, target
        self.legal_entity = legal_entity.lower()
        self.sleep = sleep
        self.max_batch = max(max_batch_operations, target.max_records if target.all_or_nothing else 1)
        self.stats: dict[str, int] = {"read_batches": 0, "write_batches": 0, "resent": 0, "read_back": 0}

    # -- the run

    def write(self, records: list[SourceRecord]) -> PopulateResult:
        items = [self._prepare(record) for record in records]
        self._refuse_repeated_keys(items)
        pending = [i for i in items if i.result is None]
        for _ in range(VERIFY_ROUNDS):
            self._read(pending)
            writes = [i for i in pending if i.result is None and self._plan(i)]
            if self.target.all_or_nothing and any(_failed(i) for i in items):
                self._abandon(items)
                break
            self._send(writes)
            pending = [i for i in writes if i.result is None and i.unsure is not None]
            if not pending:
                break
            self.stats["read_back"] += len(pending)
            for item in pending:
                item.confirmed_as, item.current, item.operation = item.intended, None, None
        for item in items:
            if item.result is None:
                item.finish(RecordOutcome.FAILED, f"outcome unknown: {item.unsure or 'no answer from D365'}")
        result = PopulateResult(self.model.entity_set, self.target.mode, stats=dict(self.stats))
        result.records = [i.result for i in items if i.result is not None]
        return result

    # -- conversion and keys

    def _prepare(self, record: SourceRecord) -> _Item:
        item = _Item(record)
        item.key = {k: record.values[k] for k in self.model.keys if k in record.values}
        try:
            for name, raw in record.values.items():
                if "@" in name:
                    continue  # annotations such as @odata.etag are not fields
                prop = self.model.field(name)
                if prop is None:
                    raise ConversionError(f"field {name!r} is not a property of {self.model.type_name}")
                value = to_wire(prop, raw, from_text=record.from_text)
                if value is not OMIT:
                    item.values[name] = value
            if self.model.company_specific:
                company = str(item.values.get("dataAreaId") or self.legal_entity).lower()
                if not company:
                    raise ConversionError(
                        "no legal entity: give the route or request one, or the record a dataAreaId"
                    )
                item.values["dataAreaId"] = company
            missing = [k for k in self.model.keys if item.values.get(k) in (None, "")]
            if missing:
                raise ConversionError(
                    f"key field(s) {', '.join(missing)} missing (the key of {self.model.entity_set} is "
                    f"{', '.join(self.model.keys)})"
                )
        except ConversionError as exc:
            item.finish(RecordOutcome.FAILED, str(exc))
            return item
        item.key = {k: item.values[k] for k in self.model.keys}
        return item

    def _refuse_repeated_keys(self, items: list[_Item]) -> None:
        seen: dict[tuple[str, ...], int] = {}
        for item in items:
            if item.result is not None:
                continue
            # D365 compares keys without regard to case
            folded = tuple(str(item.key[k]).lower() for k in self.model.keys)
            first = seen.setdefault(folded, item.source.number)
            if first != item.source.number:
                item.finish(RecordOutcome.FAILED, f"the same key as record {first}: a key may appear once")

    # -- reading by key

    def _read(self, items: list[_Item]) -> None:
        """Fill ``current`` (None = absent) for every item; a read that fails fails its record."""
        queue = list(items)
        for attempt in range(MAX_RESENDS + 1):
            retry: list[_Item] = []
            wait = 0.0
            for chunk in _chunks(queue, MAX_BATCH_OPERATIONS):
                batch = BatchRequest()
                # ref §1.2: reads are scoped to the caller's default company unless cross-company=true; with
                # dataAreaId in the key and cross-company=true, both readings of the docs find the row
                ops = [
                    batch.add(
                        BatchOperation.get(self.model.entity_set, i.key, params={"cross-company": "true"})
                    )
                    for i in chunk
                ]
                self.stats["read_batches"] += 1
                try:
                    answer = self.odata.execute_batch(batch)
                except D365Error as exc:
                    for item in chunk:
                        item.finish(RecordOutcome.FAILED, f"could not read the current record: {exc}")
                    continue
                by_op = {id(r.operation): r for r in answer}  # for_operation scans: O(n²) on big batches
                for item, op in zip(chunk, ops, strict=True):
                    found = by_op[id(op)]
                    if found.ok and found.response is not None and isinstance(found.response.body, dict):
                        item.current = found.response.body
                    elif found.status == 404:
                        item.current = None
                    elif found.retryable and attempt < MAX_RESENDS:
                        retry.append(item)
                        wait = max(wait, found.retry_after or 1.0)
                    else:
                        item.finish(
                            RecordOutcome.FAILED, f"could not read the current record: {_error(found)}"
                        )
            if not retry:
                return
            self.sleep(wait)
            queue = retry

    # -- planning

    def _plan(self, item: _Item) -> bool:
        """Decide what ``item`` needs; True when it needs a write (``operation`` set)."""
        entity_set, mode = self.model.entity_set, self.target.mode
        current = item.current
        if current is None:
            if mode == "update":
                item.finish(
                    RecordOutcome.FAILED,
                    f"no record with this key exists in {entity_set} "
                    "(mode 'update' only changes existing records)",
                )
                return False
            item.intended = RecordOutcome.CREATED
            # return=minimal: the created row is not needed back, and serialising it costs D365 a read each.
            # Whether D365 honours it (204) or answers 201 with the row is UNCONFIRMED (ref §1.5): any 2xx
            # counts and the body is never read.
            item.operation = BatchOperation("POST", entity_path(entity_set), item.values, _MINIMAL)
            return True
        changes = {
            name: value
            for name, value in item.values.items()
            if name not in self.model.keys
            and not same_value(self.model.properties[name], current.get(name), value)
        }
        if not changes:
            if item.confirmed_as is not None:  # an unanswered write that did land
                item.finish(item.confirmed_as, note="confirmed by reading it back after an unanswered $batch")
            else:
                item.finish(RecordOutcome.UNCHANGED)
            return False
        if mode == "create":
            item.finish(
                RecordOutcome.FAILED,
                "the record already exists with other values in "
                f"{', '.join(sorted(changes))} (mode 'create' never changes records)",
            )
            return False
        item.intended = RecordOutcome.UPDATED
        # ref §1.5: whether D365 enforces If-Match is UNCONFIRMED. If it does, a stale ETag (412) is read
        # back and re-planned; if not, only the differing fields are sent, so little is overwritten.
        etag = current.get("@odata.etag")
        item.operation = BatchOperation.update(entity_set, item.key, changes, etag=etag if etag else None)
        return True

    def _abandon(self, items: list[_Item]) -> None:
        failed = next(i for i in items if _failed(i))
        assert failed.result is not None
        reason = (
            f"not written: the target is all-or-nothing and record {failed.source.number} failed: "
            f"{failed.result.error}"
        )
        for item in items:
            if item.result is None:
                item.finish(RecordOutcome.FAILED, reason)

    # -- writing

    def _groups(self, writes: list[_Item]) -> deque[list[_Item]]:
        if self.target.all_or_nothing:
            return deque([writes] if writes else [])
        return deque(_chunks(writes, self.target.group_size))

    def _send(self, writes: list[_Item]) -> None:
        queue = self._groups(writes)
        while queue:
            groups: list[list[_Item]] = []
            count = 0
            while queue and (not groups or count + len(queue[0]) <= self.max_batch):
                groups.append(queue.popleft())
                count += len(groups[-1])
            batch = BatchRequest()
            for group in groups:
                batch.changeset([self._fresh(item) for item in group])
            self.stats["write_batches"] += 1
            try:
                answer = self.odata.execute_batch(batch)
            except D365ThrottledError as exc:
                self._resend_later(groups, queue, exc.retry_after, str(exc))
                continue
            except D365Error as exc:  # maybe applied, maybe not: read back, never re-send blindly
                for group in groups:
                    for item in group:
                        item.unsure = f"the $batch got no usable answer ({exc})"
                continue
            wait = 0.0
            by_op = {id(r.operation): r for r in answer}
            for group in groups:
                wait = max(wait, self._book(group, [by_op[id(self._op(i))] for i in group], queue))
            if wait:
                self.sleep(wait)

    def _fresh(self, item: _Item) -> BatchOperation:
        # a new object per send: a BatchOperation may be registered once per batch
        op = self._op(item)
        item.operation = BatchOperation(op.method, op.url, op.body, op.headers)
        item.sends += 1
        return item.operation

    @staticmethod
    def _op(item: _Item) -> BatchOperation:
        assert item.operation is not None
        return item.operation

    def _book(self, group: list[_Item], outcomes: list[OperationResult], queue: deque[list[_Item]]) -> float:
        """Record one changeset's answer; returns how long to wait before re-sending (0 = no re-send)."""
        if all(o.ok for o in outcomes):
            for item in group:
                assert item.intended is not None
                note = "confirmed after a re-read" if item.confirmed_as is not None else None
                item.finish(item.intended, note=note)
            return 0.0
        bad = [o for o in outcomes if not o.ok]
        if all(o.retryable for o in bad) and all(i.sends <= MAX_RESENDS for i in group):
            self.stats["resent"] += len(group)
            queue.append(group)
            return max([o.retry_after or DEFAULT_RETRY_AFTER for o in bad if o.throttled] or [1.0])
        culprit = next((o for o in bad if not o.rolled_back), bad[0])
        for item, outcome in zip(group, outcomes, strict=True):
            if outcome.rolled_back and len(group) > 1 and not self.target.all_or_nothing:
                self.stats["resent"] += 1
                queue.append([item])  # innocent: its changeset failed because of another record
            elif outcome.status == 412:
                item.unsure = "the record was changed in D365 after it was read (ETag mismatch)"
            elif outcome.rolled_back:
                culprit_item = group[outcomes.index(culprit)]
                item.finish(
                    RecordOutcome.FAILED,
                    f"rolled back because record {culprit_item.source.number} of its changeset failed: "
                    f"{_error(culprit)}",
                )
            else:
                item.finish(RecordOutcome.FAILED, _error(outcome))
        return 0.0

    def _resend_later(
        self, groups: list[list[_Item]], queue: deque[list[_Item]], retry_after: float | None, why: str
    ) -> None:
        for group in groups:
            if all(i.sends <= MAX_RESENDS for i in group):
                self.stats["resent"] += len(group)
                queue.append(group)
            else:
                for item in group:
                    item.finish(RecordOutcome.FAILED, f"still throttled after {MAX_RESENDS} re-sends: {why}")
        self.sleep(DEFAULT_RETRY_AFTER if retry_after is None else retry_after)


def _failed(item: _Item) -> bool:
    return item.result is not None and item.result.outcome is RecordOutcome.FAILED


def _error(outcome: OperationResult) -> str:
    _, message = outcome.error or ("", "failed")
    status = f"HTTP {outcome.status}: " if outcome.status else ""
    return f"{status}{message}"
