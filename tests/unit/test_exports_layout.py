"""Export names and ids: deterministic, safe to use in blob names, stable across redeliveries and retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.pipelines.exports import layout
from shared.pipelines.exports.report import ItemReport, RunBudget, RunReport

CID = "5acd8121-d4e1-4cf8-b31f-9713de3e3627"


def test_package_names_follow_the_storage_layout() -> None:
    seen = datetime(2026, 3, 9, 23, 59, tzinfo=timezone(timedelta(hours=-5)))  # 2026-03-10 in UTC
    path = layout.package_name("sales", seen, CID)
    assert path == f"sales/2026/03/10/{CID}.zip"
    assert layout.unpacked_prefix(path) == f"sales/2026/03/10/{CID}/"
    assert layout.manifest_name(path) == f"sales/2026/03/10/{CID}.manifest.json"
    assert layout.export_state_name("abc", CID) == f"exports/abc/{CID}.json"
    assert layout.export_lock_name("abc") == "locks/exports/abc"


def test_correlation_ids_are_normalised_or_refused() -> None:
    assert layout.safe_correlation_id("{" + CID.upper() + "}") == CID
    for bad in ("../../etc", "a/b", "", "x" * 101, "id with space"):
        with pytest.raises(ValueError, match="not a GUID-like id"):
            layout.safe_correlation_id(bad)


def test_free_text_segments_cannot_escape_their_folder() -> None:
    assert layout.safe_segment("Customer export") == "Customer export"
    assert layout.safe_segment("a/b\\c\x00") == "a_b_c_"
    for bad in ("", " ", ".", ".."):
        with pytest.raises(ValueError):
            layout.safe_segment(bad)


def test_dmf_periods_and_execution_ids_are_the_same_for_every_run_of_a_period() -> None:
    early = datetime(2026, 3, 10, 2, 1, tzinfo=UTC)
    late = datetime(2026, 3, 10, 23, 59, tzinfo=UTC)
    daily = [layout.dmf_period_start(t, 1440) for t in (early, late)]
    assert daily == [datetime(2026, 3, 10, tzinfo=UTC)] * 2
    execution_id = layout.dmf_execution_id("customers", daily[0])
    assert execution_id == "customers-20260310T0000Z"
    assert layout.dmf_period_of(execution_id) == daily[0]
    # an offset moves the boundary: a 02:00 daily export belongs to the previous day until 02:00
    assert layout.dmf_period_start(early, 1440, 120) == datetime(2026, 3, 10, 2, tzinfo=UTC)
    assert layout.dmf_period_start(early.replace(hour=1), 1440, 120) == datetime(2026, 3, 9, 2, tzinfo=UTC)
    assert layout.dmf_period_start(late, 60) == datetime(2026, 3, 10, 23, tzinfo=UTC)
    assert (
        layout.dmf_package_name("Customer/export", daily[0], execution_id)
        == "dmf/Customer_export/2026/03/10/customers-20260310T0000Z.zip"
    )
    assert layout.dmf_state_name("customers", execution_id) == f"dmf-exports/customers/{execution_id}.json"


def test_budget_reports_which_bound_stopped_the_run() -> None:
    now = [0.0]
    budget = RunBudget(max_seconds=10, max_bytes=100, max_messages=3, clock=lambda: now[0])
    assert budget.exhausted() is None
    budget.charge(messages=1, size=100)
    assert budget.exhausted() == "size_budget"
    budget = RunBudget(max_seconds=10, max_messages=2, clock=lambda: now[0])
    budget.charge(messages=2)
    assert budget.exhausted() == "message_budget"
    now[0] = 10.0
    assert budget.exhausted() == "time_budget"
    assert budget.remaining() == 0


def test_report_summary_is_one_readable_line() -> None:
    report = RunReport("dequeue", "sales", stopped_by="queue_empty", seconds=1.25)
    report.add(ItemReport("a", "stored", bytes=3 * 1024 * 1024, acked=True))
    report.add(ItemReport("b", "already_stored", acked=False, error="ack failed: HTTP 500"))
    line = report.summary()
    assert line.startswith("dequeue sales: 1 already stored, 1 stored; 3.0 MiB; 1 not acked")
    assert "stopped: queue_empty; 1.2s" in line
    assert not report.ok
    assert report.to_dict()["items"][1] == {
        "id": "b",
        "action": "already_stored",
        "acked": False,
        "error": "ack failed: HTTP 500",
    }
    assert RunReport("dequeue", "x", stopped_by="lease_held").ok
