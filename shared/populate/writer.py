"""Write records to one OData entity set: read by key, plan create / PATCH / nothing, send in ``$batch``.

Flow per run: convert each record (``convert``) → read the current rows by key (a read-only ``$batch`` of
GETs, retried freely) → plan: absent → POST (modes create, upsert), present → PATCH of the differing fields
guarded by the row's ETag (update, upsert) or nothing when D365 already holds the values (``unchanged``)
→ send the writes in changesets of ``changeset_size`` (or one per record, or one for all).

The legal entity is the writer's (the route's or the request's): a record whose ``dataAreaId`` names
another one fails, unless the target sets ``allow_record_company``.

Safety when something goes wrong:
- a changeset that fails rolls back only its members: the failing record gets D365's message, the others
  are sent again on their own (unless the target is all-or-nothing), so one bad record sinks no other;
- a whole ``$batch`` refused with a definite 4xx (nothing applied) is split in halves until the record D365
  refuses is alone;
- 429 on the whole ``$batch`` (after the transport's own retries) or on a changeset: D365 applied nothing,
  the same writes are sent again after ``Retry-After``;
- an unanswered ``$batch`` (5xx, dropped connection: maybe applied, maybe not) is never re-sent blindly:
  its records are read again by key and re-planned, so a create that did land is found and reported as
  created, never made twice; a PATCH whose ETag no longer matches (412: nothing applied) is re-planned too;
- D365 unavailable (connection, 5xx, throttled past every re-send, token) or the run's ``Deadline`` spent:
  the run stops, the records left are ``not_attempted`` and ``PopulateResult.unavailable`` says why (the
  file is tried again later, the HTTP caller gets 503).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator

from shared.d365.batch import BatchOperation, BatchRequest, BatchResult, OperationResult
from shared.d365.bulk import DEFAULT_RETRY_AFTER
from shared.d365.errors import (
    D365AuthError,
    D365ClientError,
    D365ConflictError,
    D365Error,
    D365HTTPError,
    D365NotFoundError,
    D365ThrottledError,
)
from shared.d365.odata import ODataClient
from shared.d365.odata_query import entity_path
from shared.populate.config import EntityTarget
from shared.populate.convert import same_value
from shared.populate.deadline import Deadline, OutOfTime
from shared.populate.items import (
    CONFLICT,
    UNANSWERED,
    WriteItem,
    prepare_item,
    refuse_repeated_keys,
    settle,
    unavailable,
    url_key,
)
from shared.populate.metadata import EntityModel
from shared.populate.records import SourceRecord
from shared.populate.results import PopulateResult, RecordOutcome

__all__ = ["EntityWriter"]

log = logging.getLogger(__name__)
MAX_BATCH_OPERATIONS = 1000  # per $batch request (D365 allows 5,000); all-or-nothing may need more
MAX_RESENDS = 10
_MINIMAL = {"Prefer": "return=minimal"}
VERIFY_ROUNDS = 2


class _Unavailable(Exception):
    """D365 cannot be used now: the run stops, what is left is not attempted."""


def _chunks(items: list[WriteItem], size: int) -> Iterator[list[WriteItem]]:
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
        deadline: Deadline | None = None,
    ) -> None:
        self.odata, self.model, self.target = odata, model, target
        self.legal_entity = legal_entity.lower()
        self.sleep = sleep
        self.deadline = deadline or Deadline(None)
        self.max_batch = max(max_batch_operations, target.max_records if target.all_or_nothing else 1)
        self.stats: dict[str, int] = {"read_batches": 0, "write_batches": 0, "resent": 0, "read_back": 0}

    # -- the run

    def write(self, records: list[SourceRecord]) -> PopulateResult:
        items = [
            prepare_item(record, self.model, self.legal_entity, self.target.allow_record_company)
            for record in records
        ]
        refuse_repeated_keys(self.model, items)
        stopped: str | None = None
        try:
            self._rounds(items)
        except OutOfTime as exc:
            stopped = str(exc)
        except _Unavailable as exc:
            stopped = str(exc)
        for item in items:
            if item.result is None:
                settle(item, stopped)
        result = PopulateResult(self.model.entity_set, self.target.mode, stats=dict(self.stats))
        result.records = [i.result for i in items if i.result is not None]
        result.unavailable = stopped
        return result

    def _rounds(self, items: list[WriteItem]) -> None:
        pending = [i for i in items if i.result is None]
        for _ in range(VERIFY_ROUNDS):
            self._read(pending)
            writes = [i for i in pending if i.result is None and self._plan(i)]
            if self.target.all_or_nothing and any(_failed(i) for i in items):
                self._abandon(items)
                return
            self._send(writes)
            pending = [i for i in writes if i.result is None and i.unsure is not None]
            if not pending:
                return
            self.stats["read_back"] += len(pending)
            for item in pending:
                if item.unsure_kind == UNANSWERED:
                    item.confirmed_as = item.intended
                item.current, item.operation = None, None

    # -- calls

    def _execute(self, batch: BatchRequest) -> BatchResult:
        return self.odata.execute_batch(batch, timeout=self.deadline.call_budget())

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.deadline.check(seconds)
            self.sleep(seconds)

    # -- reading by key

    def _read(self, items: list[WriteItem]) -> None:
        """Fill ``current`` (None = absent) for every item; a read that fails fails its record."""
        queue = list(items)
        for attempt in range(MAX_RESENDS + 1):
            retry: list[WriteItem] = []
            wait = 0.0
            for chunk in _chunks(queue, MAX_BATCH_OPERATIONS):
                batch = BatchRequest()
                # ref §1.2: reads are scoped to the caller's default company unless cross-company=true; with
                # dataAreaId in the key and cross-company=true, both readings of the docs find the row
                ops = [
                    batch.add(
                        BatchOperation.get(
                            self.model.entity_set, url_key(self.model, i), params={"cross-company": "true"}
                        )
                    )
                    for i in chunk
                ]
                self.stats["read_batches"] += 1
                try:
                    answer = self._execute(batch)
                except D365Error as exc:
                    if unavailable(exc):
                        raise _Unavailable(
                            f"D365 is unavailable (reading the current records): {exc}"
                        ) from exc
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
                        wait = max(wait, found.retry_after or (1.0 if found.throttled else 0.0))
                    else:
                        item.finish(
                            RecordOutcome.FAILED, f"could not read the current record: {_error(found)}"
                        )
            if not retry:
                return
            self._wait(wait)
            queue = retry

    # -- planning

    def _plan(self, item: WriteItem) -> bool:
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
            if item.confirmed_as is not None:
                item.note = "sent again after an unanswered $batch (reading it back showed it had not landed)"
            # return=minimal: the created row is not needed back, and serialising it costs D365 a read each.
            # Whether D365 honours it (204) or answers 201 with the row is UNCONFIRMED (ref §1.5): any 2xx
            # counts and the body is never read.
            item.operation = BatchOperation("POST", entity_path(entity_set), item.values, _MINIMAL)
            return True
        changes = {
            name: value
            for name, value in item.values.items()
            if name not in self.model.keys
            and not same_value(
                self.model.properties[name], current.get(name), value, date_only=name in item.date_only
            )
        }
        if not changes:
            if item.confirmed_as is not None:  # an unanswered write that did land
                item.finish(item.confirmed_as, note="confirmed by reading it back after an unanswered $batch")
            elif item.unsure_kind == CONFLICT:
                item.finish(
                    RecordOutcome.UNCHANGED,
                    note="the record changed in D365 after it was read (ETag mismatch); read again, it "
                    "already held these values",
                )
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
        if item.unsure_kind == CONFLICT:
            item.note = "written again after the record changed in D365 since it was read (ETag mismatch)"
        elif item.confirmed_as is not None:
            item.note = "sent again after an unanswered $batch (reading it back showed it had not landed)"
        # ref §1.5: whether D365 enforces If-Match is UNCONFIRMED. If it does, a stale ETag (412) is read
        # back and re-planned; if not, only the differing fields are sent, so little is overwritten.
        etag = current.get("@odata.etag")
        item.operation = BatchOperation.update(
            entity_set, url_key(self.model, item), changes, etag=etag if etag else None
        )
        return True

    def _abandon(self, items: list[WriteItem]) -> None:
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

    def _groups(self, writes: list[WriteItem]) -> deque[list[WriteItem]]:
        if self.target.all_or_nothing:
            return deque([writes] if writes else [])
        return deque(_chunks(writes, self.target.group_size))

    def _send(self, writes: list[WriteItem]) -> None:
        for item in writes:
            item.unsure = item.unsure_kind = None
        queue = self._groups(writes)
        halves: deque[list[list[WriteItem]]] = deque()  # parts of a refused $batch, sent as they are
        while queue or halves:
            if halves:
                groups = halves.popleft()
            else:
                groups, count = [], 0
                while queue and (not groups or count + len(queue[0]) <= self.max_batch):
                    groups.append(queue.popleft())
                    count += len(groups[-1])
            self._send_batch(groups, queue, halves)

    def _send_batch(
        self,
        groups: list[list[WriteItem]],
        queue: deque[list[WriteItem]],
        halves: deque[list[list[WriteItem]]],
    ) -> None:
        batch = BatchRequest()
        for group in groups:
            batch.changeset([self._fresh(item) for item in group])
        self.stats["write_batches"] += 1
        try:
            answer = self._execute(batch)
        except D365ThrottledError as exc:
            self._resend_later(groups, queue, exc.retry_after, str(exc))
            return
        except D365AuthError as exc:  # refused before anything ran
            raise _Unavailable(f"D365 is unavailable (writing): {exc}") from exc
        except (D365ClientError, D365NotFoundError, D365ConflictError) as exc:
            self._split(groups, halves, exc)  # refused as a whole before any part ran: nothing applied
            return
        except D365Error as exc:  # maybe applied, maybe not: read back, never re-send blindly
            for group in groups:
                for item in group:
                    item.unsure, item.unsure_kind = f"the $batch got no usable answer ({exc})", UNANSWERED
            return  # the read-back round settles these (or finds D365 unavailable)
        wait = 0.0
        by_op = {id(r.operation): r for r in answer}
        for group in groups:
            wait = max(wait, self._book(group, [by_op[id(self._op(i))] for i in group], queue))
        self._wait(wait)

    def _split(
        self, groups: list[list[WriteItem]], halves: deque[list[list[WriteItem]]], exc: D365HTTPError
    ) -> None:
        """A $batch D365 refused as a whole (a definite 4xx): its halves are sent again on their own until
        the record it refuses is alone, which then fails with D365's message."""
        items = [item for group in groups for item in group]
        if len(items) == 1 or self.target.all_or_nothing:
            message = f"HTTP {exc.status_code}: {exc.inner_message or exc.message}"
            if len(items) > 1:
                message = f"not written: the all-or-nothing $batch was refused as a whole: {message}"
            for item in items:
                item.finish(RecordOutcome.FAILED, message)
            return
        if len(groups) > 1:
            middle = (len(groups) + 1) // 2
            left, right = groups[:middle], groups[middle:]
        else:
            middle = (len(items) + 1) // 2
            left, right = [items[:middle]], [items[middle:]]
        self.stats["resent"] += len(items)
        halves.appendleft(right)
        halves.appendleft(left)

    def _fresh(self, item: WriteItem) -> BatchOperation:
        # a new object per send: a BatchOperation may be registered once per batch
        op = self._op(item)
        item.operation = BatchOperation(op.method, op.url, op.body, op.headers)
        item.sends += 1
        return item.operation

    @staticmethod
    def _op(item: WriteItem) -> BatchOperation:
        assert item.operation is not None
        return item.operation

    def _book(
        self, group: list[WriteItem], outcomes: list[OperationResult], queue: deque[list[WriteItem]]
    ) -> float:
        """Record one changeset's answer; returns how long to wait before re-sending (0 = no wait)."""
        if all(o.ok for o in outcomes):
            for item in group:
                assert item.intended is not None
                item.finish(item.intended)
            return 0.0
        bad = [o for o in outcomes if not o.ok]
        if all(o.retryable for o in bad):
            if any(i.sends > MAX_RESENDS for i in group):
                first = next(o for o in bad if o.throttled) if any(o.throttled for o in bad) else bad[0]
                raise _Unavailable(
                    f"D365 still refused the writes after {MAX_RESENDS} re-sends: {_error(first)}"
                )
            self.stats["resent"] += len(group)
            queue.append(group)
            # a part D365 left unanswered (not executed) goes again at once; a throttled one after Retry-After
            return max([o.retry_after or DEFAULT_RETRY_AFTER for o in bad if o.throttled] or [0.0])
        culprit = next((o for o in bad if not o.rolled_back), bad[0])
        for item, outcome in zip(group, outcomes, strict=True):
            if outcome.rolled_back and len(group) > 1 and not self.target.all_or_nothing:
                self.stats["resent"] += 1
                queue.append([item])  # innocent: its changeset failed because of another record
            elif outcome.status == 412:  # nothing applied: read again and re-planned
                item.unsure = "the record was changed in D365 after it was read (ETag mismatch)"
                item.unsure_kind = CONFLICT
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
        self,
        groups: list[list[WriteItem]],
        queue: deque[list[WriteItem]],
        retry_after: float | None,
        why: str,
    ) -> None:
        if any(i.sends > MAX_RESENDS for group in groups for i in group):
            raise _Unavailable(f"D365 still throttled the writes after {MAX_RESENDS} re-sends: {why}")
        for group in reversed(groups):
            self.stats["resent"] += len(group)
            queue.appendleft(group)
        self._wait(DEFAULT_RETRY_AFTER if retry_after is None else retry_after)


def _failed(item: WriteItem) -> bool:
    return item.result is not None and item.result.outcome is RecordOutcome.FAILED


def _error(outcome: OperationResult) -> str:
    _, message = outcome.error or ("", "failed")
    status = f"HTTP {outcome.status}: " if outcome.status else ""
    return f"{status}{message}"
