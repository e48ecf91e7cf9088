"""Business-event receipt: events/s through ``receive_events`` (parse, validate, durable conditional
create) ÷ raw conditional blob writes of the same bodies, and the receiver's latency p50/p99.

One Azurite (in memory) per run. Each round takes N fresh events (the current envelope, ~700 bytes, unique
``EventId``s) and sends them from a pool of threads, as D365's processing threads and scaled-out instances
would:

- **baseline**: ``BlobClient.upload_blob(body, overwrite=False)`` (If-None-Match: *) of the same bytes to
  ``baseline/<n>.json`` with a plain ``BlobServiceClient``;
- **ours**: ``receive_events(context, body, headers)``: header checks, JSON parse, envelope parse and
  validation, path from the event, the same conditional create (with metadata), the JSON answer.

Rounds are interleaved (baseline then ours, then ours then baseline, ...) after an unmeasured warm-up of
each; medians are compared.
Also printed: the client CPU per event of each side (``time.process_time``; Azurite is another process).
Also printed: a round of duplicates (the same bodies posted again: one failed conditional create and one
small redelivery record each).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from azure.storage.blob import BlobServiceClient

from bench.common import Result, fmt_rate, median, rate
from localstack.processes import run_azurite
from shared.context import AppContext
from shared.events.body import read_body
from shared.events.layout import raw_path
from shared.events.model import parse_event
from shared.events.settings import BusinessEventSettings
from shared.events.validate import check_event, check_request
from shared.pipelines.business_events import receive_events
from shared.settings import Settings

TARGET = 0.7
THREADS = 8
EVENTS, QUICK_EVENTS, SMOKE_EVENTS = 1000, 300, 50  # smoke (--smoke): it runs, figures mean nothing
ROUNDS, QUICK_ROUNDS = 7, 3
HEADERS = {"Content-Type": "application/json", "Content-Length": "700"}


def make_bodies(count: int, round_no: int) -> list[bytes]:
    bodies = []
    for n in range(count):
        event = {
            "BusinessEventId": "SalesInvoicePostedBusinessEvent",
            "BusinessEventLegalEntity": "USMF",
            "ContextRecordSubject": "",
            "ControlNumber": 5637611083 + round_no * 100_000 + n,
            "EventId": str(uuid.uuid4()).upper(),
            "EventTime": "/Date(1672408275000)/",
            "EventTimeIso8601": "2022-12-30T13:51:15.2942742Z",
            "InitiatingUserAADObjectId": "{410A2690-5EC2-42EE-9F2A-E75B4E324930}",
            "InvoiceAccount": "US-001",
            "InvoiceAmountInAccountingCurrency": 1234.5,
            "InvoiceDate": "/Date(1672358400000)/",
            "InvoiceDueDate": "/Date(1674950400000)/",
            "InvoiceId": f"CIV-{round_no:02}{n:06}",
            "InvoiceTaxAmount": 0.0,
            "LegalEntity": "USMF",
            "MajorVersion": 0,
            "MinorVersion": 0,
            "ParentContextRecordSubjects": [],
            "SalesOrderId": f"SO-{n:06}",
        }
        bodies.append(json.dumps(event, separators=(",", ":")).encode())
    return bodies


def timed_pool(work: Callable[[int], Any], count: int) -> tuple[float, list[float], float]:
    """Run ``work(i)`` for every i on the thread pool; (wall seconds, per-call seconds, CPU seconds).

    CPU is this process's (every thread): Azurite runs in its own process, so it is the client's cost,
    which other load on the machine disturbs far less than wall time."""
    latencies = [0.0] * count

    def one(index: int) -> None:
        began = time.perf_counter()
        work(index)
        latencies[index] = time.perf_counter() - began

    started, cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(one, range(count)))
    return time.perf_counter() - started, latencies, time.process_time() - cpu


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def own_cpu_per_event(bodies: list[bytes]) -> float:
    """CPU seconds per event of the receiver's own steps (checks, parse, validate, path), no storage."""
    settings, headers = BusinessEventSettings(), {"content-type": "application/json"}
    started = time.process_time()
    for body in bodies:
        check_request(headers, body, settings)
        item = read_body(body).items[0]
        event = parse_event(item.fields, item.original, source=item.source, envelope=item.envelope)
        check_event(event, settings)
        raw_path(event)
    return (time.process_time() - started) / len(bodies)


@contextmanager
def receiver_context(connection_string: str) -> Iterator[AppContext]:
    env = {
        # the receiver never calls D365; these only satisfy the settings
        "D365_BASE_URL": "http://127.0.0.1:9",
        "AzureWebJobsStorage": connection_string,
        "BUSINESS_EVENTS_CONTAINER": "events",
    }
    context = AppContext.from_settings(Settings.from_env(env, sections=[BusinessEventSettings]))
    try:
        yield context
    finally:
        context.close()


def run(
    quick: bool, *, log: Callable[[str], None] = print, events: int | None = None, smoke: bool = False
) -> list[Result]:
    count = events or (SMOKE_EVENTS if smoke else QUICK_EVENTS if quick else EVENTS)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    with run_azurite() as azurite, receiver_context(azurite.connection_string) as context:
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        baseline_container = service.get_container_client("baseline")
        baseline_container.create_container()

        def baseline(bodies: list[bytes], tag: str) -> tuple[float, list[float], float]:
            def write(i: int) -> None:
                baseline_container.get_blob_client(f"{tag}/{i}.json").upload_blob(bodies[i], overwrite=False)

            return timed_pool(write, len(bodies))

        def ours(bodies: list[bytes]) -> tuple[float, list[float], float]:
            def post(i: int) -> None:
                result = receive_events(context, bodies[i], HEADERS)
                if result.status != 200:
                    raise RuntimeError(f"receiver answered {result.status}: {result.body}")

            return timed_pool(post, len(bodies))

        baseline(make_bodies(200, 99), "warm-up")
        ours(make_bodies(200, 98))
        base_rates, our_rates, base_lat, our_lat, ratios = [], [], [], [], []
        base_cpu, our_cpu = [], []
        last: list[bytes] = []
        for round_no in range(rounds):
            bodies = make_bodies(count, round_no)
            if round_no % 2:  # alternate which side goes first, so neither always follows the other
                our_seconds, our_calls, our_cpu_seconds = ours(bodies)
                base_seconds, base_calls, base_cpu_seconds = baseline(bodies, f"r{round_no}")
            else:
                base_seconds, base_calls, base_cpu_seconds = baseline(bodies, f"r{round_no}")
                our_seconds, our_calls, our_cpu_seconds = ours(bodies)
            base_cpu.append(base_cpu_seconds / count)
            our_cpu.append(our_cpu_seconds / count)
            base_rates.append(rate(count, base_seconds))
            our_rates.append(rate(count, our_seconds))
            base_lat += base_calls
            our_lat += our_calls
            ratios.append(our_rates[-1] / base_rates[-1])
            last = bodies
            log(
                f"  round {round_no + 1}: baseline {fmt_rate(base_rates[-1], 'writes/s')}, "
                f"ours {fmt_rate(our_rates[-1], 'events/s')} (ratio {ratios[-1]:.3f})"
            )
        stored = sum(1 for _ in context.store.container("events").list_blobs())
        duplicate_seconds, duplicate_calls, _ = ours(last)
        own_cpu = own_cpu_per_event(last)
    expected = rounds * count + 200
    ratio = median(our_rates) / median(base_rates) if stored == expected else 0.0
    ms = 1000.0
    our_p50, our_p99 = percentile(our_lat, 0.5) * ms, percentile(our_lat, 0.99) * ms
    base_p50, base_p99 = percentile(base_lat, 0.5) * ms, percentile(base_lat, 0.99) * ms
    details = [
        f"{count:,} events per round, {rounds} interleaved rounds, {THREADS} threads, Azurite in memory",
        f"per round ratio: {', '.join(f'{r:.3f}' for r in ratios)}",
        f"latency ours: p50 {our_p50:.1f} ms, p99 {our_p99:.1f} ms, max {max(our_lat) * ms:.1f} ms "
        "(D365 times out at 10,000 ms)",
        f"latency baseline: p50 {base_p50:.1f} ms, p99 {base_p99:.1f} ms",
        f"client CPU per event: ours {median(our_cpu) * ms:.2f} ms, baseline {median(base_cpu) * ms:.2f} ms "
        f"(ratio {median(base_cpu) / median(our_cpu):.3f}); the receiver's own steps (checks, parse, "
        f"validate, path; no storage) take {own_cpu * ms * 1000:.0f} µs of it",
        f"duplicates (the last round posted again): {fmt_rate(rate(count, duplicate_seconds), 'events/s')}, "
        f"p99 {percentile(duplicate_calls, 0.99) * ms:.1f} ms",
        f"stored blobs: {stored:,} (expected {expected:,}: one per distinct event)",
    ]
    for line in details:
        log(f"  {line}")
    return [
        Result(
            name="business_events.receive",
            measure="events/s through receive_events (parse, validate, conditional create) ÷ raw conditional "
            "blob writes of the same bodies",
            ours=f"{fmt_rate(median(our_rates), 'events/s')}, p50 {our_p50:.1f} ms, p99 {our_p99:.1f} ms",
            baseline=f"{fmt_rate(median(base_rates), 'writes/s')}, p50 {base_p50:.1f} ms, "
            f"p99 {base_p99:.1f} ms",
            ratio=ratio,
            target=TARGET,
            details=details,
        )
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.business_events")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    options = parser.parse_args()
    for result in run(options.quick, events=options.events):
        print(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
