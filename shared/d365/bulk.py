"""The bulk splitter: cuts a huge stream of writes into ``$batch`` requests and decides what to re-send.

Sans-IO: ``BulkPlanner`` only plans and books results; ``ODataClient.bulk`` does the sending and waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shared.d365.batch import BatchOperation, BatchRequest, BatchResult, OperationResult

__all__ = ["DEFAULT_RETRY_AFTER", "MAX_BATCH_OPERATIONS", "BulkFailure", "BulkPlanner", "BulkResult"]

DEFAULT_RETRY_AFTER: Final = (
    30.0  # Microsoft's sample client waits 30 s when Retry-After is absent (ref §2.3)
)
MAX_BATCH_OPERATIONS: Final = 5000  # "A batch can contain up to 5,000 operations" (ref §1.6)


@dataclass
class BulkFailure:
    """An operation that was not applied, with D365's own message."""

    operation: BatchOperation
    status: int | None
    code: str
    message: str
    rolled_back: bool = False  # fine itself, undone because another member of its changeset failed


@dataclass
class BulkResult:
    total: int = 0  # operations taken from the iterable
    succeeded: int = 0
    failed: int = 0
    resent: int = 0  # operation re-sends after a 429 or an unanswered part
    batches: int = 0  # $batch requests sent
    failures: list[BulkFailure] = field(default_factory=list)
    aborted: Exception | None = None  # a whole-batch error stopped the run; the rest was not consumed

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.aborted is None


_Group = tuple[list[BatchOperation], int]  # one changeset's operations and how often it was sent


class BulkPlanner:
    """Sans-IO state machine behind ``ODataClient.bulk``: cuts operations into batches, decides re-sends.

    Operations are taken from the iterable only when a batch is being filled, so memory stays constant for
    huge inputs. A changeset (``changeset_size`` operations, or one when not atomic) is re-sent as a whole,
    and only when the answer proves it was not applied for a transient reason (429, or no answer part at
    all). A create re-sent after an ambiguous failure (network drop, 5xx) could be duplicated, so such
    failures are never retried here: they abort the run and are reported.
    """

    def __init__(
        self,
        operations: Iterable[BatchOperation],
        *,
        changeset_size: int = 100,
        max_operations_per_batch: int = 1000,
        atomic: bool = True,
        max_resends: int = 30,
    ) -> None:
        if not 1 <= max_operations_per_batch <= MAX_BATCH_OPERATIONS:
            raise ValueError(f"max_operations_per_batch must be 1..{MAX_BATCH_OPERATIONS}")
        if atomic and not 1 <= changeset_size <= max_operations_per_batch:
            raise ValueError("changeset_size must be between 1 and max_operations_per_batch")
        self._source = iter(operations)
        self._size = changeset_size if atomic else 1
        self._max = max_operations_per_batch
        self._max_resends = max_resends
        self._retry: list[_Group] = []
        self._carry: _Group | None = None
        self._exhausted = False
        self._groups: dict[int, list[_Group]] = {}  # id(batch) -> its groups
        self.wait = 0.0  # seconds to sleep before the next batch (Retry-After)
        self.result = BulkResult()

    def _take(self) -> _Group | None:
        if self._carry is not None:
            group, self._carry = self._carry, None
            return group
        if self._exhausted:
            return None
        ops: list[BatchOperation] = []
        for op in self._source:
            ops.append(op)
            if len(ops) == self._size:
                break
        else:
            self._exhausted = True
        self.result.total += len(ops)
        return (ops, 0) if ops else None

    def next_batch(self) -> BatchRequest | None:
        """The next batch to send (re-sends first), or None when everything has been sent."""
        self.wait = 0.0
        groups: list[_Group] = []
        count = 0
        while self._retry and count + len(self._retry[0][0]) <= self._max:
            groups.append(self._retry.pop(0))
            count += len(groups[-1][0])
        while count < self._max and (fresh := self._take()) is not None:
            if count + len(fresh[0]) > self._max:
                self._carry = fresh
                break
            groups.append(fresh)
            count += len(fresh[0])
        if not groups:
            return None
        batch = BatchRequest()
        for ops, _ in groups:
            batch.changeset(ops)
        self._groups[id(batch)] = groups
        self.result.batches += 1
        return batch

    def record(self, batch: BatchRequest, result: BatchResult) -> list[OperationResult]:
        """Book a batch answer; returns the successful results (for a caller's callback)."""
        done: list[OperationResult] = []
        by_op = {id(r.operation): r for r in result}
        for ops, sends in self._groups.pop(id(batch)):
            outcomes = [by_op[id(op)] for op in ops]
            good = [o for o in outcomes if o.ok]
            self.result.succeeded += len(good)
            done += good
            bad = [o for o in outcomes if not o.ok]
            if bad and all(o.retryable for o in bad) and sends < self._max_resends:
                waits = [o.retry_after for o in bad if o.throttled]
                if waits:
                    self.wait = max(self.wait, *(DEFAULT_RETRY_AFTER if w is None else w for w in waits))
                self._resend([o.operation for o in bad], sends)
                continue
            for outcome in bad:
                code, message = outcome.error or ("", "")
                self._fail(outcome.operation, outcome.status, code, message, outcome.rolled_back)
        return done

    def throttled(self, batch: BatchRequest, retry_after: float | None) -> None:
        """The whole batch got a 429 (after the transport's own retries): nothing was applied, re-send it."""
        self.wait = DEFAULT_RETRY_AFTER if retry_after is None else retry_after
        for ops, sends in self._groups.pop(id(batch)):
            if sends < self._max_resends:
                self._resend(ops, sends)
            else:
                for op in ops:
                    self._fail(op, 429, "", "still throttled after the re-send budget")

    def abort(self, batch: BatchRequest, error: Exception) -> None:
        """A whole-batch failure whose effect is unknown: report its operations and stop (no blind retry)."""
        status = getattr(error, "status_code", None)
        for ops, _ in self._groups.pop(id(batch)):
            for op in ops:
                self._fail(op, status, "", f"batch failed, outcome unknown: {error}")
        waiting = self._retry + ([self._carry] if self._carry else [])
        for ops, _ in waiting:  # taken from the iterable but never (re-)sent
            for op in ops:
                self._fail(op, None, "", f"not sent: the bulk was aborted ({error})")
        self._retry, self._carry, self._exhausted = [], None, True
        self.result.aborted = error

    def _resend(self, ops: list[BatchOperation], sends: int) -> None:
        self.result.resent += len(ops)
        self._retry.append((ops, sends + 1))

    def _fail(
        self, op: BatchOperation, status: int | None, code: str, message: str, rb: bool = False
    ) -> None:
        self.result.failed += 1
        self.result.failures.append(BulkFailure(op, status, code, message, rb))
