"""Real-time populate: records/second of a 5,000-record upsert through ``$batch`` against the same records
sent as one request each, in the same run on the same emulator.

1. a fresh emulator and the app's own context (settings → token provider → transport → OData client);
2. baseline: N new CustomersV3 records, one ``ODataClient.create`` (POST) per record, sequentially — what
   a naive integration does (and fewer requests than a naive upsert, which reads first);
3. ours: N other new records through ``shared.populate`` (the path of the ``odata`` import route and the
   HTTP function): conversion from CSV-like text, key reads in a read-only ``$batch``, creates in
   changesets of 20 per ``$batch``;
4. both runs are checked: every record created, none failed, exactly 2N new rows in the emulator.
A third timing (details only): the same upsert again, every record found ``unchanged`` (reads only).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

from bench.common import Result, build_context, emulator, fmt_rate, rate
from shared.populate.config import EntityTarget
from shared.populate.records import SourceRecord
from shared.populate.results import RecordOutcome
from shared.populate.run import entity_model, write_records

ENTITY_SET = "CustomersV3"
COMPANY = "usmf"
RECORDS, QUICK_RECORDS = 5000, 500
SMOKE_RECORDS = 50  # python -m bench --smoke: it runs; the figures mean nothing
TARGET = 3.0  # $batch upsert ≥ 3× the records/s of one request per record


def _records(prefix: str, count: int) -> list[SourceRecord]:
    return [
        SourceRecord(
            n,
            {"CustomerAccount": f"{prefix}{n:05d}", "OrganizationName": f"Bench customer {n}",
             "CustomerGroupId": "10", "CreditLimit": f"{n % 97}.50", "OnHoldStatus": "no"},
            from_text=True,
        )
        for n in range(1, count + 1)
    ]  # fmt: skip


def run(quick: bool = False, log: Callable[[str], None] = print, smoke: bool = False) -> list[Result]:
    count = SMOKE_RECORDS if smoke else QUICK_RECORDS if quick else RECORDS
    with emulator() as emu:
        context = build_context(emu)
        try:
            model = entity_model(context, ENTITY_SET)
            target = EntityTarget(ENTITY_SET, mode="upsert", changeset_size=20, max_records=count)
            before = context.odata.count(ENTITY_SET, cross_company=True)

            typed = {"OnHoldStatus": "No", "dataAreaId": COMPANY}
            baseline_rows = [
                {**r.values, **typed, "CreditLimit": n % 97 + 0.5}
                for n, r in enumerate(_records("BQ", count), 1)
            ]
            log(f"  baseline: {count} records, one POST each")
            started = time.perf_counter()
            for row in baseline_rows:
                context.odata.create(ENTITY_SET, row)
            baseline_seconds = time.perf_counter() - started

            log(f"  ours: {count} records upserted through $batch")
            records = _records("BU", count)
            started = time.perf_counter()
            result = write_records(context, target, model, records, legal_entity=COMPANY)
            ours_seconds = time.perf_counter() - started
            started = time.perf_counter()
            again = write_records(context, target, model, records, legal_entity=COMPANY)
            again_seconds = time.perf_counter() - started

            created = result.counts["created"]
            unchanged = again.counts["unchanged"]
            after = context.odata.count(ENTITY_SET, cross_company=True)
        finally:
            context.close()
    if created != count or unchanged != count or after - before != 2 * count:
        raise RuntimeError(
            f"populate run incomplete: created {created}/{count}, unchanged on repeat {unchanged}/{count}, "
            f"new rows {after - before} (expected {2 * count}); first failure: {result.message()}"
        )
    assert all(r.outcome is RecordOutcome.CREATED for r in result.records)
    ours_rate, baseline_rate = rate(count, ours_seconds), rate(count, baseline_seconds)
    return [
        Result(
            name="populate_upsert",
            measure="records/s of a $batch upsert (read by key + create) ÷ one POST per record",
            ours=fmt_rate(ours_rate, "rec/s"),
            baseline=fmt_rate(baseline_rate, "rec/s"),
            ratio=ours_rate / baseline_rate,
            target=TARGET,
            details=[
                f"{count} records: upsert {ours_seconds:.1f}s in {result.stats['read_batches']} read and "
                f"{result.stats['write_batches']} write $batch requests; one POST each "
                f"{baseline_seconds:.1f}s",
                f"the same upsert again (all unchanged, reads only): {again_seconds:.1f}s = "
                f"{fmt_rate(rate(count, again_seconds), 'rec/s')}",
            ],
        )
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.populate_upsert", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"smoke run ({QUICK_RECORDS} records)")
    args = parser.parse_args(argv)
    for result in run(args.quick):
        print(json.dumps(result.to_json(), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
