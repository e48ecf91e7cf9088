"""``run_demo``: set up the emulator, start every flow at once, print a pass/fail line as each ends and a
summary of what happened where. Used by ``python -m demo`` (one run on a fresh stack) and by ``make run``
(against the stack it started, which then keeps serving).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from demo.events import events_flow
from demo.exports import dequeue_flow, dmf_export_flow
from demo.imports import import_flow
from demo.inputs import (
    SAMPLE_PACKAGE,
    DemoFile,
    customer_groups_file,
    customers_with_errors_file,
    package_file,
    pick_route,
)
from demo.populate import http_populate_flow, realtime_file_flow
from demo.registration import register_event_endpoint, register_jobs, stop_duplicates
from demo.report import DemoReport, FlowResult
from demo.target import DemoTarget, FlowFailed, Stack
from shared.pipelines.imports.settings import ImportSettings
from shared.redact import redact_text
from shared.status import Outcome

__all__ = ["FLOWS", "run_demo"]

#: Flow keys (``--flows``) and their titles, in the summary's order.
FLOWS = {
    "csv": "raw CSV import",
    "package": "package import",
    "errors": "import with row errors",
    "realtime": "real-time file populate",
    "http": "HTTP populate",
    "events": "business events",
    "dequeue": "export dequeue",
    "dmf": "DMF export",
}
IMPORT_FLOWS = ("csv", "package", "errors")


def _guarded(title: str, flow: Callable[[], FlowResult], began: float) -> FlowResult:
    """The flow's result, or a failed one saying what went wrong (never an exception); ``seconds``: when it
    ended, counted from the start of all flows."""
    try:
        result = flow()
    except FlowFailed as exc:
        result = FlowResult(title, False, str(exc))
    except Exception as exc:  # a broken flow is a FAIL line, not a traceback
        result = FlowResult(title, False, redact_text(f"{type(exc).__name__}: {exc}")[:500])
    result.seconds = time.monotonic() - began
    return result


def _input(stack: Stack, key: str, stamp: str, package: Path) -> DemoFile:
    """The file an import flow drops, through the route of IMPORT_ROUTES that fits it."""
    settings = stack.settings.section(ImportSettings)
    if key == "package":
        route = pick_route(settings, package=True)
        if route is None:
            raise FlowFailed("IMPORT_ROUTES has no route that takes data packages")
        return package_file(route, stamp, package)
    entity = "Customer groups" if key == "csv" else "Customers V3"
    route = pick_route(settings, entity=entity)
    if route is None:
        raise FlowFailed(f"IMPORT_ROUTES has no route for raw {entity!r} files")
    return customer_groups_file(route, stamp) if key == "csv" else customers_with_errors_file(route, stamp)


def run_demo(
    target: DemoTarget,
    *,
    out: Callable[[str], None] | None = None,
    flows: Collection[str] = tuple(FLOWS),
    timeout: float = 120.0,
    stop: threading.Event | None = None,
    package: Path = SAMPLE_PACKAGE,
) -> DemoReport:
    """Run the chosen flows against ``target`` (each waits at most ``timeout`` s for its result)."""
    began = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = DemoReport(stamp)
    lock = threading.Lock()

    def say(text: str) -> None:
        with lock:
            if out is not None:
                out(text)
            else:
                print(text, flush=True)

    stop = stop or threading.Event()
    stack: Stack | None = None
    endpoint: str | None = None
    try:
        stack = Stack(target, stop=stop)
        say(f"Demo run {stamp}: {', '.join(FLOWS[f] for f in FLOWS if f in flows)}")
        for added in register_jobs(stack):
            say(f"  registered in the emulator: {added}")
        if "events" in flows:
            endpoint = register_event_endpoint(stack)
            say(
                f"  business events endpoint in the emulator: {stack.function_url('business_events_receive')}"
            )
        results = _run_flows(stack, stamp, flows, endpoint, timeout, package, say)
        report.flows = [results[key] for key in FLOWS if key in results]
    except Exception as exc:  # invalid settings, or the emulator or storage cannot be reached at all
        report.flows.append(FlowResult("set-up", False, redact_text(f"{type(exc).__name__}: {exc}")[:500]))
    finally:
        if stack is not None:
            if endpoint is not None:
                try:
                    stop_duplicates(stack)
                except Exception as exc:  # say so: the emulator would go on sending every event twice
                    say(f"  could not switch the emulator's duplicate delivery off: {redact_text(str(exc))}")
            stack.close()
    report.seconds = time.monotonic() - began
    if stop.is_set():
        say("Demo stopped before its flows ended.")
    else:
        say(report.summary())
    return report


def _run_flows(
    stack: Stack,
    stamp: str,
    flows: Collection[str],
    endpoint: str | None,
    timeout: float,
    package: Path,
    say: Callable[[str], None],
) -> dict[str, FlowResult]:
    expected = {"csv": Outcome.SUCCEEDED, "package": Outcome.SUCCEEDED, "errors": Outcome.PARTIALLY_SUCCEEDED}
    futures: dict[str, Future[FlowResult]] = {}

    def one_import(key: str) -> FlowResult:
        item = _input(stack, key, stamp, package)
        return import_flow(stack, FLOWS[key], item, expect=expected[key], timeout=timeout)

    def events() -> FlowResult:
        assert endpoint is not None
        imports = [futures[key].result() for key in IMPORT_FLOWS if key in futures]
        executions = {str(r.facts["execution_id"]): r.name for r in imports if r.facts.get("execution_id")}
        return events_flow(stack, endpoint, executions, timeout=timeout)

    work: dict[str, Callable[[], FlowResult]] = {key: partial(one_import, key) for key in IMPORT_FLOWS}
    work.update(events=events, dequeue=lambda: dequeue_flow(stack, timeout=timeout))
    work["realtime"] = lambda: realtime_file_flow(stack, stamp, timeout=timeout)
    work["http"] = lambda: http_populate_flow(stack, stamp, timeout=timeout)
    work["dmf"] = lambda: dmf_export_flow(stack, timeout=timeout)
    results: dict[str, FlowResult] = {}
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(FLOWS), thread_name_prefix="demo") as pool:
        for key in FLOWS:
            if key in flows:
                futures[key] = pool.submit(_guarded, FLOWS[key], work[key], began)
        keys = {future: key for key, future in futures.items()}
        for future in as_completed(keys):
            results[keys[future]] = future.result()
            say(results[keys[future]].line())
    return results
