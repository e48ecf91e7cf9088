"""Delivery like D365's business event batch threads (ref §5.2, §5.3): a few processing threads POST each
event to its endpoint, near real time; a failed attempt (no 2xx answer, a timeout, a refused connection, an
unreadable Key Vault secret) is retried ``retry_count`` times ``retry_wait_ms`` apart, then the event goes to
the error log, from where it can be resent.

The request: ``POST`` of the JSON payload with ``Content-Type: application/json`` plus the endpoint's extra
headers, no auth header — the function key travels in the URL (ref §5.2; content type and headers are
UNCONFIRMED, this is the most plausible choice). Redirects are not followed.

Fault options (``DeliveryFaults``) make delivery at-least-once and unordered on purpose: duplicates,
reordering (held per endpoint and released shuffled) and delay. A reset bumps the generation: queued work is
dropped and answers of requests already in flight are ignored.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import requests

from emulator.business_events.model import (
    Attempt,
    BusinessEventsModel,
    DeliveryFaults,
    DeliveryRecord,
    Endpoint,
    safe_error,
    utc_stamp,
)

__all__ = ["DeliveryService", "EndpointUnavailableError"]

log = logging.getLogger("emulator.business_events")
_IDLE_EXIT_S = 30.0  # an idle worker ends; submit() starts workers again
_BODY_EXCERPT = 300


class EndpointUnavailableError(Exception):
    """The endpoint's URL cannot be had (e.g. its Key Vault secret is missing): a failed attempt."""


@dataclass
class _Hold:
    """Events held back for one endpoint by the reorder fault, released shuffled."""

    deadline: float
    items: list[tuple[float, DeliveryRecord]] = field(default_factory=list)


class DeliveryService:
    def __init__(self, model: BusinessEventsModel, resolve_url: Callable[[Endpoint], str]) -> None:
        self._model = model
        self._resolve_url = resolve_url
        self._cond = threading.Condition(model.lock)
        self._queue: list[tuple[float, int, int, DeliveryRecord]] = []  # (ready at, seq, generation, record)
        self._holds: dict[str, _Hold] = {}
        self._seq = itertools.count()
        self._generation = 0
        self._in_flight = 0
        self._workers: dict[int, threading.Thread] = {}
        self._closed = False
        self._random = random.Random()

    # -- submitting ---------------------------------------------------------------------------------------

    def submit(self, record: DeliveryRecord, endpoint: Endpoint) -> list[DeliveryRecord]:
        """Queue one event for one endpoint, applying the fault options; returns every copy queued."""
        faults = endpoint.faults or self._model.faults
        copies = [record]
        if faults.duplicate_probability > 0 and self._random.random() < faults.duplicate_probability:
            copies += [
                replace(record, id=str(uuid.uuid4()), kind="duplicate", attempts=[])
                for _ in range(faults.duplicate_count)
            ]
            self._model.count("duplicates_injected", faults.duplicate_count)
        now = time.monotonic()
        ready = now + faults.delay_ms / 1000
        with self._cond:
            for copy in copies:
                self._model.logged(copy)
                if faults.reorder_window > 1:
                    self._hold(endpoint.id, faults, now, ready, copy)
                else:
                    self._push(ready, copy)
            self._ensure_workers()
            self._cond.notify_all()
        return copies

    def _push(self, ready: float, record: DeliveryRecord) -> None:
        heapq.heappush(self._queue, (ready, next(self._seq), self._generation, record))

    def _hold(
        self, endpoint_id: str, faults: DeliveryFaults, now: float, ready: float, record: DeliveryRecord
    ) -> None:
        hold = self._holds.get(endpoint_id)
        if hold is None:
            hold = self._holds[endpoint_id] = _Hold(now + faults.reorder_max_hold_ms / 1000)
        hold.items.append((ready, record))
        if len(hold.items) >= faults.reorder_window:
            self._release(endpoint_id, now)

    def _release(self, endpoint_id: str, now: float) -> None:
        """Queue the held events in a shuffled order that differs from the raise order (when it can)."""
        items = self._holds.pop(endpoint_id).items
        order = list(items)
        if len(order) > 1:
            while order == items:
                self._random.shuffle(order)
            self._model.count("reordered_batches")
        for ready, record in order:
            self._push(max(ready, now), record)

    def resend(self, record: DeliveryRecord, endpoint: Endpoint) -> DeliveryRecord:
        """Send a logged event again: same payload (same EventId and ControlNumber, like D365's Resend)."""
        again = replace(
            record, id=str(uuid.uuid4()), kind="resend", attempts=[], outcome="pending", enqueued=utc_stamp()
        )
        self.submit(again, endpoint)
        return again

    # -- control ------------------------------------------------------------------------------------------

    def cancel_all(self) -> None:
        """Drop queued and held events; answers of in-flight requests will be ignored."""
        with self._cond:
            self._generation += 1
            for _, _, _, record in self._queue:
                record.outcome = "cancelled"
            for hold in self._holds.values():
                for _, record in hold.items:
                    record.outcome = "cancelled"
            self._queue.clear()
            self._holds.clear()
            self._cond.notify_all()

    def close(self) -> None:
        self.cancel_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def pending(self) -> int:
        """Events queued, held or being sent right now."""
        with self._cond:
            return len(self._queue) + sum(len(h.items) for h in self._holds.values()) + self._in_flight

    def wake(self) -> None:
        """Settings changed (e.g. the thread count): let the workers look again."""
        with self._cond:
            self._ensure_workers()
            self._cond.notify_all()

    # -- workers ------------------------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        if self._closed:
            return
        for index in range(self._model.settings.processing_threads):
            worker = self._workers.get(index)
            if worker is None or not worker.is_alive():
                worker = threading.Thread(
                    target=self._run, args=(index,), name=f"business-events-{index}", daemon=True
                )
                self._workers[index] = worker
                worker.start()

    def _take(self, index: int) -> tuple[int, DeliveryRecord] | None:
        idle_since = time.monotonic()
        with self._cond:
            while True:
                if self._closed or index >= self._model.settings.processing_threads:
                    break
                now = time.monotonic()
                for endpoint_id in [k for k, h in self._holds.items() if h.deadline <= now]:
                    self._release(endpoint_id, now)
                if self._queue and self._queue[0][0] <= now:
                    _, _, generation, record = heapq.heappop(self._queue)
                    self._in_flight += 1
                    return generation, record
                waits = [1.0] + [h.deadline - now for h in self._holds.values()]
                if self._queue:
                    waits.append(self._queue[0][0] - now)
                elif not self._holds and now - idle_since > _IDLE_EXIT_S:
                    break
                self._cond.wait(max(0.0, min(waits)))
            if self._workers.get(index) is threading.current_thread():
                del self._workers[index]
            return None

    def _run(self, index: int) -> None:
        with requests.Session() as session:
            session.trust_env = False  # loopback receivers: never through a proxy from the environment
            while (job := self._take(index)) is not None:
                generation, record = job
                try:
                    self._attempt(session, generation, record)
                except Exception:  # a worker must survive anything
                    log.exception("business event delivery %s failed unexpectedly", record.id)
                finally:
                    with self._cond:
                        self._in_flight -= 1
                        self._cond.notify_all()

    def _attempt(self, session: requests.Session, generation: int, record: DeliveryRecord) -> None:
        model = self._model
        with self._cond:
            if generation != self._generation:
                return
            endpoint = model.endpoints.get(record.endpoint_id)
            settings = model.settings
        if endpoint is None:
            with self._cond:
                record.attempts.append(Attempt(utc_stamp(), None, "the endpoint was deleted", 0))
                record.outcome = "cancelled"
            return
        started, at = time.monotonic(), utc_stamp()
        status, error = self._post(
            session, endpoint, record, (endpoint.timeout_ms or settings.timeout_ms) / 1000
        )
        attempt = Attempt(
            at, status, safe_error(error) if error else None, int((time.monotonic() - started) * 1000)
        )
        with self._cond:
            if generation != self._generation:
                return  # reset while in flight: forget it
            record.attempts.append(attempt)
            settings = model.settings
            if error is None:
                record.outcome = "delivered"
                model.count("delivered")
            elif len(record.attempts) <= settings.retry_count:
                self._push(time.monotonic() + settings.retry_wait_ms / 1000, record)
                model.count("retries")
            else:
                record.outcome = "failed"
                model.add_error(record)
                model.count("failed")
                log.warning(
                    "business event %s to endpoint %s failed after %d attempts: %s",
                    record.business_event_id,
                    record.endpoint_name,
                    len(record.attempts),
                    attempt.error,
                )
            self._cond.notify_all()

    def _post(
        self, session: requests.Session, endpoint: Endpoint, record: DeliveryRecord, timeout: float
    ) -> tuple[int | None, str | None]:
        try:
            url = self._resolve_url(endpoint)
        except EndpointUnavailableError as exc:
            return None, str(exc)
        headers = {"Content-Type": "application/json", **endpoint.headers}
        try:
            with session.post(
                url,
                data=record.payload,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
                stream=True,
            ) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return status, None
                excerpt = response.raw.read(_BODY_EXCERPT, decode_content=True) or b""
        except requests.Timeout:
            return None, f"no answer within {timeout:g} s (timeout)"
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"
        text = excerpt.decode("utf-8", errors="replace").strip()
        return status, f"HTTP {status}" + (f": {text}" if text else "")
