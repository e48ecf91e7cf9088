"""Throttled bulk work: with the emulator's request limit set low, a bulk job must finish with zero failed
operations at no less than 90% of the throughput the limit allows (limit ÷ window).

Each variant runs on a reset emulator with a fresh app context (settings → token provider → transport →
OData client), then:

1. turns on the user-based request-count limit only (``PUT /_emulator/limits``): ``LIMIT`` requests per
   ``WINDOW`` seconds, sliding; the other limits stay off;
2. fills the window with ``LIMIT`` cheap GETs of the same caller, so the job starts in steady state: a
   fresh window would let the first ``LIMIT`` operations through at once and inflate the rate up to 1.5×
   for a 3-window job;
3. runs the job and times it from its first request to its last answer:
   - ``sequential``: ``ODataClient.create`` of N CustomersV3 rows, one at a time;
   - ``threads``: the same with a pool of 4 threads sharing one client, as real jobs do;
   - ``batch``: ``ODataClient.bulk`` of creates in ``$batch`` requests (one request each at the gate);
4. turns the limit off and checks the result: no failed operation, exactly N new rows with the job's
   key prefix (a POST retried after a 429 must not duplicate, none may be lost), and every 429 the
   emulator sent was retried by the client.

achieved ÷ allowed = (requests in the job ÷ seconds) ÷ (LIMIT ÷ WINDOW). The job's N spans ``WINDOWS``
windows of the limit. Nothing is faked: the client really sleeps each ``Retry-After``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench.common import Result, build_context, counted_statuses, emulator, fmt_rate, rate
from localstack.processes import EmulatorInfo
from shared.context import AppContext
from shared.d365.batch import BatchOperation
from shared.d365.odata_query import F

ENTITY_SET = "CustomersV3"
COMPANY = "usmf"
THREADS = 4
WINDOWS = 3  # the job needs this many windows' worth of requests
BATCH_SIZE = 10  # operations per $batch (one changeset)
TARGET = 0.9


@dataclass(frozen=True)
class Limits:
    requests: int
    window: float

    @property
    def allowed_rate(self) -> float:
        return self.requests / self.window


FULL = Limits(requests=100, window=10.0)
# Smoke run. Each window loses up to the time the client takes to send a window's worth of requests (the
# 429 comes at the end of that burst and Retry-After rounds the rest of the window up to whole seconds),
# so the ratio is about 1 / (1 + allowed rate × request latency): a lower rate keeps $batch meaningful.
QUICK = Limits(requests=20, window=4.0)
SMOKE = Limits(requests=5, window=1.0)  # python -m bench --smoke: it runs; the figures mean nothing


@dataclass
class JobRun:
    variant: str
    operations: int
    requests: int  # HTTP requests the job needed without throttling (= operations, or batches)
    seconds: float
    failed: int
    stats: dict[str, Any]
    statuses: dict[str, int]  # the emulator's answers to the job's requests
    rows_found: int
    extra: list[str]


def customer(prefix: str, number: int) -> dict[str, Any]:
    return {
        "dataAreaId": COMPANY,
        "CustomerAccount": f"{prefix}{number:06d}",
        "CustomerGroupId": "10",
        "OrganizationName": f"Bench customer {number}",
    }


def _diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Transport stats of the job alone (the priming requests taken out)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict):
            old = old or {}
            diffs = {k: v - old.get(k, 0) for k, v in value.items() if v - old.get(k, 0)}
            out[key] = diffs
        else:
            out[key] = value - (old or 0)
    return out


def _status_diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in sorted(after.items()) if v - before.get(k, 0)}


def _prime(context: AppContext, limits: Limits) -> None:
    """Fill the caller's window: ``limits.requests`` GETs, all admitted (the window was empty)."""
    for _ in range(limits.requests):
        context.transport.request("GET", "/data/CustomerGroups?$top=1&$select=CustomerGroupId")


def _sequential(context: AppContext, prefix: str, count: int) -> tuple[int, int, list[str]]:
    failed = 0
    for number in range(count):
        try:
            context.odata.create(ENTITY_SET, customer(prefix, number))
        except Exception:  # a benchmark counts failures; the type is in the transport stats
            failed += 1
    return failed, count, []


def _threads(context: AppContext, prefix: str, count: int) -> tuple[int, int, list[str]]:
    def one(number: int) -> bool:
        try:
            context.odata.create(ENTITY_SET, customer(prefix, number))
        except Exception:
            return False
        return True

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        ok = sum(pool.map(one, range(count)))
    return count - ok, count, []


def _batch(context: AppContext, prefix: str, count: int) -> tuple[int, int, list[str]]:
    operations: Iterator[BatchOperation] = (
        BatchOperation.create(ENTITY_SET, customer(prefix, number)) for number in range(count)
    )
    result = context.odata.bulk(operations, changeset_size=BATCH_SIZE, max_operations_per_batch=BATCH_SIZE)
    failed = result.failed + (count - result.total)  # operations never taken count as failed too
    extra = [
        f"bulk result: {result.succeeded} succeeded, {result.failed} failed, {result.resent} re-sent, "
        f"{result.batches} $batch requests, aborted={result.aborted!r}"
    ]
    return failed, result.batches, extra


VARIANTS: dict[str, tuple[str, Callable[[AppContext, str, int], tuple[int, int, list[str]]], int]] = {
    # name: (description, job, operations per request)
    "sequential": ("ODataClient.create, 1 thread", _sequential, 1),
    "threads": (f"ODataClient.create, {THREADS} threads", _threads, 1),
    "batch": (f"ODataClient.bulk, $batch of {BATCH_SIZE}", _batch, BATCH_SIZE),
}


def run_variant(emu: EmulatorInfo, variant: str, limits: Limits, log: Callable[[str], None]) -> JobRun:
    _description, job, per_request = VARIANTS[variant]
    emu.admin("POST", "reset")
    context = build_context(emu)
    try:
        context.tokens.get_token()
        prefix = f"BENCH-{variant[:3].upper()}-"
        operations = limits.requests * WINDOWS * per_request
        emu.admin(
            "PUT",
            "limits",
            json={"window_seconds": limits.window, "requests": {"enabled": True, "limit": limits.requests}},
        )
        _prime(context, limits)
        before, statuses_before = context.transport.stats.snapshot(), counted_statuses(emu)
        started = time.perf_counter()
        failed, requests_sent, extra = job(context, prefix, operations)
        seconds = time.perf_counter() - started
        stats = _diff(context.transport.stats.snapshot(), before)
        statuses = _status_diff(dict(counted_statuses(emu)), dict(statuses_before))
        emu.admin("DELETE", "limits")
        found = context.odata.count(ENTITY_SET, filter=F("CustomerAccount").startswith(prefix))
    finally:
        context.close()
    run = JobRun(variant, operations, requests_sent, seconds, failed, stats, statuses, found, extra)
    log(
        f"  {variant:10} {operations:,} operations in {requests_sent:,} requests, {seconds:.1f}s: "
        f"{rate(requests_sent, seconds):.2f} req/s (allowed {limits.allowed_rate:.2f}), failed {failed}, "
        f"rows {found:,}, retries {stats['retries'] or 'none'}, "
        f"throttled wait {stats['throttled_seconds']:.1f}s"
    )
    return run


def to_result(run: JobRun, limits: Limits) -> Result:
    description, _job, per_request = VARIANTS[run.variant]
    request_rate = rate(run.requests, run.seconds)
    ratio = request_rate / limits.allowed_rate
    throttled = int(run.stats["retries"].get("throttled", 0))
    answered_429 = run.statuses.get("429", 0)
    problems = []
    if run.failed:
        problems.append(f"{run.failed} failed operations")
    if run.rows_found != run.operations:
        problems.append(f"{run.rows_found:,} rows exist for {run.operations:,} operations")
    if answered_429 != throttled:
        problems.append(f"emulator sent {answered_429} × 429, client retried {throttled}")
    ours = fmt_rate(request_rate, "req/s")
    if per_request > 1:
        ours += f" ({fmt_rate(rate(run.operations, run.seconds), 'ops/s')})"
    details = [
        f"{run.operations:,} operations, {run.requests:,} requests in {run.seconds:.1f}s; "
        f"failed {run.failed}; rows created {run.rows_found:,}",
        f"emulator answers to the job: {run.statuses}",
        f"transport: retries {run.stats['retries'] or 'none'}, failures {run.stats['failures'] or 'none'}, "
        f"throttled wait {run.stats['throttled_seconds']:.1f}s summed over threads",
        *run.extra,
    ]
    result = Result(
        name=f"throttled_bulk.{run.variant}",
        measure=f"{description}: requests/s ÷ allowed ({limits.requests} per {limits.window:g}s)",
        ours=ours,
        baseline=fmt_rate(limits.allowed_rate, "req/s allowed"),
        ratio=ratio,
        target=TARGET,
        details=details,
    )
    if problems:
        # zero failures and exact row counts are part of the target: a miss there fails the measure
        result.ratio = 0.0
        result.details.insert(0, "FAILED CHECKS: " + "; ".join(problems) + f" (rate ratio was {ratio:.3f})")
    return result


def run(
    quick: bool = False,
    variants: list[str] | None = None,
    log: Callable[[str], None] = print,
    smoke: bool = False,
) -> list[Result]:
    limits = SMOKE if smoke else QUICK if quick else FULL
    log(
        f"  limit: {limits.requests} requests per {limits.window:g}s sliding window "
        f"= {limits.allowed_rate:.2f} req/s; each job needs {WINDOWS} windows' worth of requests"
    )
    results = []
    with emulator() as emu:
        for variant in variants or list(VARIANTS):
            results.append(to_result(run_variant(emu, variant, limits, log), limits))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throttled_bulk", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run (20 requests per 4 s)")
    parser.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s): {', '.join(unknown)}")
    for result in run(args.quick, args.variants or None):
        print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
