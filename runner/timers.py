"""Timer triggers: one listener per function, run by whichever runner holds the function's singleton lock.

As in the host, only the holder of ``azure-webjobs-hosts/locks/<host-id>/Host.Functions.<name>.Listener``
schedules the timer; the other runners stand by and take over when the lease is released or expires.
The listener runs occurrences one after the other, so runs never overlap; an occurrence that passes
while the previous run is still going is skipped, as the host skips it.

Schedule status lives in ``timers/<host-id>/Host.Functions.<name>/status`` (``Last``, ``Next``,
``LastUpdated``, like the host's). Before each run the listener claims the occurrence in that blob with an
ETag-conditional write, so an occurrence runs once even if two runners briefly both believe they lead;
after the run it records ``Last``/``Next``. On taking the lock: if ``Next`` has already passed the timer
was missed (the runners were down), so it runs at once with ``past_due=True``; otherwise
``run_on_startup`` runs it once. A run cut short by shutdown leaves ``Next`` in the past, so the next
leader runs it past due. ``@app.retry`` policies (fixed delay, exponential backoff) are applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError
from azure.functions.timer import TimerRequest
from azure.storage.blob import BlobServiceClient

from runner.discovery import FunctionSpec
from runner.invocation import Invoker, Outcome
from runner.ncrontab import Schedule
from runner.singleton import BlobLease, LeaseRegistry, keep_renewed
from runner.storage import HOSTS_CONTAINER, error_text, read_json, write_json

__all__ = ["TimerListener", "retry_delays", "schedule_zone"]

log = logging.getLogger("runner.timers")
Clock = Callable[[], datetime]


def schedule_zone(settings: Mapping[str, str]) -> tzinfo:
    """UTC, or ``WEBSITE_TIME_ZONE`` when it names an IANA zone (the Linux plans' form)."""
    name = settings.get("WEBSITE_TIME_ZONE", "").strip()
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning("WEBSITE_TIME_ZONE=%r is not an IANA time zone; timers use UTC", name)
        return UTC


def _span(text: str) -> float:
    hours, minutes, seconds = (float(p) for p in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def retry_delays(policy: Mapping[str, Any] | None) -> list[float]:
    """Seconds to wait before each retry of a failed run under an ``@app.retry`` policy."""
    if not policy:
        return []
    count = int(policy.get("max_retry_count", 0))
    if count < 0:  # -1 means "retry forever" in the host; the runner caps it
        count = 10
    if policy.get("strategy") == "fixed_delay":
        return [_span(str(policy.get("delay_interval", "00:00:00")))] * count
    low = _span(str(policy.get("minimum_interval", "00:00:01")))
    high = _span(str(policy.get("maximum_interval", "00:15:00")))
    return [min(high, low * 2**n) for n in range(count)]


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value else None


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


class TimerListener:
    def __init__(
        self,
        spec: FunctionSpec,
        *,
        schedule: Schedule,
        service: BlobServiceClient,
        host_id: str,
        instance_id: str,
        invoker: Invoker,
        registry: LeaseRegistry,
        stopping: asyncio.Event,
        standby_interval: float = 5.0,
        lease_seconds: int = 15,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.spec, self.schedule, self.invoker = spec, schedule, invoker
        self.instance_id, self.registry, self.stopping = instance_id, registry, stopping
        self.standby_interval, self.lease_seconds, self.clock = standby_interval, lease_seconds, clock
        self.run_on_startup = bool(spec.trigger.get("runOnStartup"))
        function_id = f"Host.Functions.{spec.name}"
        self.lock_blob = service.get_blob_client(HOSTS_CONTAINER, f"locks/{host_id}/{function_id}.Listener")
        self.status_blob = service.get_blob_client(HOSTS_CONTAINER, f"timers/{host_id}/{function_id}/status")
        self.retries = retry_delays(spec.retry_policy)
        self.leading = False

    async def run(self) -> None:
        while not self.stopping.is_set():
            lease = BlobLease(self.lock_blob, duration=self.lease_seconds, create=True)
            try:
                acquired = await asyncio.to_thread(lease.acquire)
            except AzureError as exc:
                log.warning("%s: timer lock unavailable: %s", self.spec.name, error_text(exc))
                acquired = False
            if not acquired:
                await self._pause(self.standby_interval)
                continue
            self.registry.add(lease)
            lost = asyncio.Event()
            renewing = asyncio.ensure_future(keep_renewed(lease, lost))
            self.leading = True
            try:
                await self._lead(lost)
            except AzureError as exc:  # storage trouble: step down, try again after a pause
                log.warning("%s: timer paused by a storage error: %s", self.spec.name, error_text(exc))
                await self._pause(self.standby_interval)
            finally:
                self.leading = False
                renewing.cancel()
                lease.release()
                self.registry.discard(lease)

    async def _pause(self, seconds: float, *also: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in (self.stopping, *also)]
        try:
            await asyncio.wait(waiters, timeout=max(seconds, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _lead(self, lost: asyncio.Event) -> None:
        status, _ = await asyncio.to_thread(read_json, self.status_blob)
        expected = _parse((status or {}).get("Next"))
        now = self.clock()
        if expected is not None and now > expected:
            log.info(
                "%s: the occurrence due at %s was missed; running now (past due)",
                self.spec.name,
                _iso(expected),
            )
            await self.fire(now, past_due=True)
        elif self.run_on_startup:
            await self.fire(now, past_due=False)
        # continue the recorded schedule (a TimeSpan interval keeps its rhythm across leaders), unless
        # the schedule changed so that an earlier occurrence is now due
        upcoming = expected if expected is not None and expected > self.clock() else None
        while not (self.stopping.is_set() or lost.is_set()):
            occurrence = self.schedule.next_after(self.clock())
            if upcoming is not None:
                occurrence, upcoming = min(occurrence, upcoming), None
            while not (self.stopping.is_set() or lost.is_set()):
                remaining = (occurrence - self.clock()).total_seconds()
                if remaining <= 0:
                    break
                await self._pause(min(remaining, 1.0), lost)
            if self.stopping.is_set() or lost.is_set():
                return
            await self.fire(occurrence, past_due=False)

    async def fire(self, occurrence: datetime, *, past_due: bool) -> None:
        """Claim ``occurrence`` in the status blob and run it (with the retry policy, if any)."""
        claim = await asyncio.to_thread(self._claim, occurrence)
        if claim is None:
            return
        previous, etag = claim
        request = TimerRequest(
            past_due=past_due,
            schedule_status={k: previous.get(k) for k in ("Last", "Next", "LastUpdated")},
            schedule={"AdjustForDST": True},
        )
        recorded: list[str] = []

        async def finish(outcome: Outcome) -> None:
            if outcome.succeeded or attempt == len(self.retries) or self.stopping.is_set():
                recorded.append(await asyncio.to_thread(self._record, occurrence, etag))

        label = f"{_iso(occurrence)}{' (past due)' if past_due else ''}"
        for attempt in range(len(self.retries) + 1):
            outcome = await self.invoker.invoke(
                self.spec,
                {self.spec.trigger_arg: request},
                detail=label,
                retry=(attempt, len(self.retries)),
                finish=finish,
            )
            if outcome.succeeded or recorded or self.stopping.is_set():
                return
            await self._pause(self.retries[attempt])

    def _claim(self, occurrence: datetime) -> tuple[dict[str, Any], str] | None:
        status, etag = read_json(self.status_blob)
        status = status if isinstance(status, dict) else {}
        last = _parse(status.get("Last"))
        running = status.get("Running") or {}
        if last is not None and last >= occurrence:
            return None
        claimed = _parse(running.get("Occurrence"))
        if claimed is not None and claimed >= occurrence:
            return None
        document = {
            **status,
            "Next": status.get("Next") or _iso(occurrence),  # a cut-short first run is then past due
            "Running": {
                "Occurrence": _iso(occurrence),
                "Instance": self.instance_id,
                "Started": _iso(self.clock()),
            },
        }
        try:
            new_etag = write_json(self.status_blob, document, etag=etag, create_only=etag is None)
        except (ResourceExistsError, HttpResponseError) as exc:
            if isinstance(exc, ResourceExistsError) or exc.status_code == 412:
                log.info(
                    "%s: occurrence %s already claimed by another runner", self.spec.name, _iso(occurrence)
                )
                return None
            raise
        return status, new_etag

    def _record(self, occurrence: datetime, etag: str) -> str:
        now = self.clock()
        document = {
            "Last": _iso(occurrence),
            "Next": _iso(self.schedule.next_after(now)),
            "LastUpdated": _iso(now),
            "Running": None,
        }
        try:
            return write_json(self.status_blob, document, etag=etag)
        except HttpResponseError as exc:
            log.warning(
                "%s: schedule status not updated (changed by another runner): %s",
                self.spec.name,
                exc.reason or exc,
            )
            return ""
