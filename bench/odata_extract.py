"""OData extraction: records/s of ``ODataClient.list`` against plain ``requests`` on the same pages, and peak
RSS of our extraction at two row counts (it must not grow with the number of rows).

Throughput: one emulator seeded with N CustomersV3 rows; both sides fetch
``GET /data/CustomersV3?cross-company=true`` with ``Prefer: odata.maxpagesize=10000`` (D365's largest page),
follow ``@odata.nextLink`` and decode every page, counting rows without keeping them. The runs are
interleaved (baseline, ours, baseline, ours, ...) after one unmeasured warm-up of each, so machine noise
and emulator warm-up hit both; medians are compared.

Memory: each extraction runs in a fresh child process (``python -m bench.odata_extract --child``) that
reports ``ru_maxrss`` after building the client stack and fetching a token (the setup level) and after
the extraction (the peak).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from bench.common import (
    Result,
    build_context,
    child_env,
    emulator,
    emulator_from_env,
    fmt_rate,
    median,
    peak_rss_mib,
    rate,
)
from localstack.processes import ROOT, EmulatorInfo
from shared.d365.odata import ODataClient

ENTITY_SET = "CustomersV3"
PAGE_SIZE = 10_000
DEFAULT_ROWS = 200_000
QUICK_ROWS = 50_000
SMOKE_ROWS = 2_000  # python -m bench --smoke: it runs; the figures mean nothing
ROUNDS = 5
QUICK_ROUNDS = 3


def baseline_extract(base_url: str, token: str, *, top: int | None = None) -> int:
    """Plain ``requests``: the same query, page size and nextLink loop; ``response.json()`` per page."""
    url: str | None = f"{base_url}/data/{ENTITY_SET}?cross-company=true"
    if top is not None:
        url = f"{url}&$top={top}"
    rows = 0
    with requests.Session() as session:
        session.headers.update(
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "Prefer": f"odata.maxpagesize={PAGE_SIZE}",
            }
        )
        while url is not None:
            response = session.get(url, timeout=(10, 120))
            response.raise_for_status()
            page = response.json()
            rows += len(page["value"])
            url = page.get("@odata.nextLink")
            del response, page
    return rows


def client_extract(client: ODataClient, *, top: int | None = None) -> int:
    """Our client: iterate rows lazily, counting only."""
    rows = 0
    for _ in client.list(ENTITY_SET, cross_company=True, page_size=PAGE_SIZE, top=top):
        rows += 1
    return rows


def seed(emu: EmulatorInfo, rows: int) -> int:
    """Make the entity set hold at least ``rows`` rows (the demo data counts too); returns the total."""
    have = int(emu.admin("POST", "seed", json={"entity_set": ENTITY_SET, "count": 0})["rows"])
    if have < rows:
        have = int(emu.admin("POST", "seed", json={"entity_set": ENTITY_SET, "count": rows - have})["rows"])
    return have


def _timed(extract: Callable[[], int]) -> tuple[int, float, float]:
    """Rows, wall seconds and this process's CPU seconds of one extraction."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = extract()
    return count, time.perf_counter() - wall, time.process_time() - cpu


def _child(emu: EmulatorInfo, impl: str, rows: int) -> dict[str, Any]:
    """Run one extraction in a fresh interpreter and return what it measured."""
    cmd = [sys.executable, "-m", "bench.odata_extract", "--child", "--impl", impl, "--rows", str(rows)]
    done = subprocess.run(cmd, cwd=ROOT, env=child_env(emu), capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"child {impl} {rows} failed:\n{done.stderr[-4000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def child_main(impl: str, rows: int) -> int:
    """``--child``: measure one extraction of ``rows`` rows in this (fresh) process; print one JSON line."""
    emu = emulator_from_env()
    context = build_context(emu)
    try:
        token = context.tokens.get_token()  # token acquisition (MSAL, TLS) is setup, not extraction
        context.odata.count(ENTITY_SET)  # the connection pool and HTTP stack warmed as well
        setup = peak_rss_mib()
        started = time.perf_counter()
        if impl == "ours":
            got = client_extract(context.odata, top=rows)
        else:
            got = baseline_extract(emu.base_url, token, top=rows)
        seconds = time.perf_counter() - started
        peak = peak_rss_mib()
    finally:
        context.close()
    print(json.dumps({"impl": impl, "rows": got, "seconds": seconds, "setup_mib": setup, "peak_mib": peak}))
    return 0


def run(
    rows: int | None = None, quick: bool = False, log: Callable[[str], None] = print, smoke: bool = False
) -> list[Result]:
    rows = rows or (SMOKE_ROWS if smoke else QUICK_ROWS if quick else DEFAULT_ROWS)
    rounds = QUICK_ROUNDS if quick else ROUNDS
    results: list[Result] = []
    with emulator() as emu:
        started = time.perf_counter()
        total = seed(emu, rows)
        log(f"  seeded {ENTITY_SET}: {total:,} rows in {time.perf_counter() - started:.1f}s")
        context = build_context(emu)
        try:
            token = context.tokens.get_token()
            client = context.odata
            baseline = lambda: baseline_extract(emu.base_url, token)  # noqa: E731
            ours = lambda: client_extract(client)  # noqa: E731
            # one unmeasured warm-up of each: emulator caches, connection pools, first-call imports
            for name, extract in (("baseline", baseline), ("ours", ours)):
                count = _timed(extract)[0]
                if count != total:
                    raise RuntimeError(f"{name} warm-up extracted {count:,} rows, expected {total:,}")
            wall: dict[str, list[float]] = {"baseline": [], "ours": []}
            cpu: dict[str, list[float]] = {"baseline": [], "ours": []}
            for round_no in range(1, rounds + 1):
                for name, extract in (("baseline", baseline), ("ours", ours)):
                    count, seconds, cpu_seconds = _timed(extract)
                    if count != total:
                        raise RuntimeError(f"{name} extracted {count:,} rows, expected {total:,}")
                    wall[name].append(rate(count, seconds))
                    cpu[name].append(cpu_seconds)
                    log(
                        f"  round {round_no} {name:8} {count:,} rows in {seconds:.2f}s "
                        f"= {wall[name][-1]:,.0f} rec/s (client CPU {cpu_seconds:.2f}s)"
                    )
            stats = context.transport.stats.snapshot()
        finally:
            context.close()
        base_median, our_median = median(wall["baseline"]), median(wall["ours"])
        pairs = [o / b for o, b in zip(wall["ours"], wall["baseline"], strict=True)]
        cpu_base, cpu_ours = median(cpu["baseline"]), median(cpu["ours"])
        results.append(
            Result(
                name="odata_extract.throughput",
                measure=f"records/s, ODataClient.list ÷ plain requests ({total:,} rows, median of {rounds})",
                ours=fmt_rate(our_median, "rec/s"),
                baseline=fmt_rate(base_median, "rec/s"),
                ratio=our_median / base_median,
                target=0.9,
                details=[
                    "baseline runs (rec/s): " + ", ".join(f"{r:,.0f}" for r in wall["baseline"]),
                    "our runs (rec/s):      " + ", ".join(f"{r:,.0f}" for r in wall["ours"]),
                    "per-round ratios:      "
                    + ", ".join(f"{r:.3f}" for r in pairs)
                    + f" (best ours ÷ best baseline {max(wall['ours']) / max(wall['baseline']):.3f})",
                    f"client CPU per extraction (median): ours {cpu_ours:.2f}s, plain requests "
                    f"{cpu_base:.2f}s (ours costs {cpu_ours / cpu_base:.2f}× the baseline's CPU)",
                    f"transport: {stats['calls']} calls, {stats['attempts']} attempts, "
                    f"retries {stats['retries'] or 'none'}, failures {stats['failures'] or 'none'}",
                ],
            )
        )

        small = min(max(PAGE_SIZE, total // 4), total)  # fewer rows than a page: both runs read them all
        log(f"  memory: fresh child processes extracting {small:,} and {total:,} rows")
        runs = {
            "ours_small": _child(emu, "ours", small),
            "ours_full": _child(emu, "ours", total),
            "baseline_full": _child(emu, "baseline", total),
        }
        for key, run_info in runs.items():
            log(
                f"  {key:14} {run_info['rows']:>9,} rows: setup {run_info['setup_mib']:.1f} MiB, "
                f"peak {run_info['peak_mib']:.1f} MiB ({run_info['seconds']:.1f}s)"
            )
        small_run, full_run, base_run = runs["ours_small"], runs["ours_full"], runs["baseline_full"]
        for name, run_info, want in (
            ("ours", small_run, small),
            ("ours", full_run, total),
            ("baseline", base_run, total),
        ):
            if run_info["rows"] != want:
                raise RuntimeError(f"{name} child extracted {run_info['rows']:,} rows, expected {want:,}")
        growth_small = small_run["peak_mib"] - small_run["setup_mib"]
        growth_full = full_run["peak_mib"] - full_run["setup_mib"]
        results.append(
            Result(
                name="odata_extract.peak_rss",
                measure=f"peak RSS, {total:,} rows ÷ {small:,} rows (fresh processes)",
                ours=f"{full_run['peak_mib']:.1f} MiB",
                baseline=f"{small_run['peak_mib']:.1f} MiB",
                ratio=full_run["peak_mib"] / small_run["peak_mib"],
                target=1.1,
                higher_is_better=False,
                details=[
                    f"growth above the setup level: {growth_full:.1f} MiB for {total:,} rows vs "
                    f"{growth_small:.1f} MiB for {small:,} rows "
                    f"(ratio {growth_full / growth_small if growth_small > 0 else float('nan'):.2f})",
                    f"plain requests, {total:,} rows: peak {base_run['peak_mib']:.1f} MiB, growth "
                    f"{base_run['peak_mib'] - base_run['setup_mib']:.1f} MiB (ours ÷ plain peak: "
                    f"{full_run['peak_mib'] / base_run['peak_mib']:.2f})",
                ],
            )
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.odata_extract", description=__doc__)
    parser.add_argument("--rows", type=int, default=None, help=f"rows to extract (default {DEFAULT_ROWS:,})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run ({QUICK_ROWS:,} rows)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", choices=["ours", "baseline"], default="ours", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.impl, args.rows or DEFAULT_ROWS)
    for result in run(args.rows, args.quick):
        print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
