"""``python -m bench [name ...] [--rows N] [--quick | --smoke]``: run the benchmarks, print a results table.

Every measure is a ratio against a baseline taken in the same run (or against the limit the emulator
enforces), with PASS/FAIL against its target. Timing is never asserted: a miss is reported loudly but
the exit code stays 0; only a benchmark that could not run (an exception) exits 1. Results and how to
read them: docs/benchmarks.md. ``--smoke`` runs every benchmark at a tiny size: a check that each one still
runs end to end (the test suite does it), whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Result, machine

#: Benchmark name → what it measures. ``bench/<name>.py`` provides
#: ``run(quick: bool = False, log: Callable[[str], None] = print, smoke: bool = False, ...) -> list[Result]``
#: (``smoke``: its tiny sizes); it is imported
#: only when it runs, so one broken benchmark cannot stop the others.
BENCHMARKS: dict[str, str] = {
    "odata_extract": "OData extraction: records/s vs plain requests, peak RSS vs row count",
    "throttled_bulk": "bulk writes under a low request limit: throughput vs the limit, zero failures",
    "business_events": "business-event receipt: events/s vs raw conditional blob writes, latency p50/p99",
    "exports_dequeue": "1 GiB export dequeue: wall time vs a plain streamed copy, peak RSS < 150 MiB",
    "packages": "package build and SAS block upload: throughput vs bare deflate / the Azure SDK, memory",
    "imports_1gb": "1 GiB raw CSV import: packaging + SAS upload vs plain upload_blob, peak RSS < 150 MiB",
    "populate_upsert": "5,000-record OData upsert through $batch: records/s vs one request per record",
}


def _log(text: str) -> None:
    print(text, flush=True)


def _run(name: str, args: argparse.Namespace) -> list[Result]:
    module = importlib.import_module(f"bench.{name}")
    options: dict[str, Any] = {"quick": args.quick or args.smoke, "log": _log}
    if args.smoke:
        options["smoke"] = True
    if name == "odata_extract":
        options["rows"] = args.rows
    results: list[Result] = module.run(**options)
    return results


def _table(results: list[Result]) -> str:
    header = ("benchmark", "ours", "baseline / bound", "ratio", "target", "result")
    rows = [
        (r.name, r.ours, r.baseline, f"{r.ratio:.3f}", r.target_text, "PASS" if r.passed else "FAIL")
        for r in results
    ]
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the benchmarks (all, or the named ones) and print ratios against their baselines.",
        epilog="benchmarks: " + "; ".join(f"{k} ({v})" for k, v in BENCHMARKS.items()),
    )
    parser.add_argument("names", nargs="*", metavar="name", help="benchmarks to run (default: all)")
    parser.add_argument("--rows", type=int, default=None, help="rows for odata_extract (default 200,000)")
    parser.add_argument("--quick", action="store_true", help="smaller N, shorter windows (a few minutes)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: checks each benchmark runs; figures mean nothing"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the client's retry log lines")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.rows is not None and args.rows < 1:
        parser.error("--rows must be positive")
    # the transport logs every 429 retry as a warning: expected here, so only shown with --verbose
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, stream=sys.stderr)

    host = machine()
    started_at = datetime.now(UTC)
    _log(
        f"bench {'(smoke) ' if args.smoke else '(quick) ' if args.quick else ''}on {host['cpus']} CPUs, "
        f"{host['implementation']} "
        f"{host['python']}, {host['platform']}, {started_at:%Y-%m-%d %H:%M} UTC"
    )
    results: list[Result] = []
    errors: list[str] = []
    began = time.perf_counter()
    for name in args.names or list(BENCHMARKS):
        _log(f"\n== {name}: {BENCHMARKS[name]}")
        part = time.perf_counter()
        try:
            results.extend(_run(name, args))
        except Exception:
            errors.append(name)
            _log(f"!! {name} could not run:\n{traceback.format_exc()}")
        _log(f"   ({time.perf_counter() - part:.0f}s)")
    elapsed = time.perf_counter() - began

    _log("\n== results\n")
    if results:
        _log(_table(results))
        _log("")
        for result in results:
            _log(f"{result.name}: {result.measure}")
            for detail in result.details:
                _log(f"    {detail}")
    missed = [r.name for r in results if not r.passed]
    _log(f"\ntotal {elapsed:.0f}s")
    if missed:
        banner = "!" * 78
        _log(f"\n{banner}\n!!! {len(missed)} of {len(results)} TARGETS MISSED: {', '.join(missed)}")
        _log(f"!!! (exit code stays 0: benchmarks report, they do not gate)\n{banner}")
    elif results:
        _log(f"all {len(results)} targets met")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "started": started_at.isoformat(timespec="seconds"),
                    "quick": args.quick,
                    "smoke": args.smoke,
                    "machine": host,
                    "seconds": round(elapsed, 1),
                    "results": [r.to_json() for r in results],
                    "errors": errors,
                },
                indent=2,
                ensure_ascii=False,
            )
            + "\n",
            encoding="utf-8",
        )
    if errors:
        _log(f"!!! benchmarks that could not run: {', '.join(errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
