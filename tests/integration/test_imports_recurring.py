"""Recurring-integration routes end to end: File jobs and Data package jobs through the emulator's connector,
jobstatus monitoring, error detail for processed-with-errors messages, and the 413 size refusal."""

from __future__ import annotations

from tests.integration.test_imports_stack import (
    CUSTOMER_GROUPS_JOB,
    PACKAGE_JOB,
    ImportStack,
    csv_text,
    customer_groups_csv,
    make_stack,
)

__all__ = ["make_stack"]

FILE_ROUTE = {
    "name": "groups-file",
    "target": "recurring",
    "activity_id": CUSTOMER_GROUPS_JOB,
    "entity": "Customer groups",
    "legal_entity": "usmf",
    "entities": [{"entity": "Customer groups", "source_format": "CSV"}],
}
PACKAGE_JOB_ROUTE = {
    "name": "groups-package",
    "target": "recurring",
    "activity_id": PACKAGE_JOB,
    "send_as": "package",
    "legal_entity": "usmf",
    "definition_group": "Recurring package import",
    "entities": [{"entity": "Customer groups", "file_pattern": "*.csv"}],
}


def groups(stack: ImportStack, prefix: str) -> dict[str, str]:
    rows = stack.odata("CustomerGroups", **{"$filter": f"CustomerGroupId eq '{prefix}*'"})
    return {r["CustomerGroupId"]: r["Description"] for r in rows}


def test_a_raw_file_is_enqueued_to_a_file_job_and_archived(make_stack) -> None:
    stack: ImportStack = make_stack([FILE_ROUTE])
    data = customer_groups_csv("1", "2", prefix="RF")
    report = stack.run(stack.drop("groups-file/groups 2024.csv", data))
    assert report.outcome == "sent", report
    assert report.message_id
    assert report.job_id
    assert report.sha256
    [message] = stack.messages(CUSTOMER_GROUPS_JOB)
    assert message["external_identifier"] == f"groups 2024.csv#{report.sha256[:12]}"
    assert stack.until_finished(report.job_id) == "succeeded"
    assert groups(stack, "RF") == {"RF1": "Group 1", "RF2": "Group 2"}
    [stored] = [n for n in stack.names(stack.settings.archive_container) if n.endswith(".csv")]
    record = stack.record(f"{stack.settings.archive_container}/{stored}")
    assert record["outcome"] == "succeeded"
    assert record["correlation"]["message_id"] == report.message_id
    assert record["d365"]["status"] == "Processed"
    assert record["d365"]["execution_detail"][0]["entity_name"] == "Customer groups"


def test_a_raw_file_is_packaged_for_a_data_package_job(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_JOB_ROUTE])
    report = stack.run(stack.drop("groups-package/a.csv", customer_groups_csv("9", prefix="RP")))
    assert report.outcome == "sent", report
    assert report.job_id is not None
    assert stack.until_finished(report.job_id) == "succeeded"
    assert groups(stack, "RP") == {"RP9": "Group 9"}


def test_the_same_file_for_two_companies_is_enqueued_and_followed_for_each(make_stack) -> None:
    route = {**FILE_ROUTE, "legal_entity_from": "folder", "legal_entity": ""}
    stack: ImportStack = make_stack([route])
    data = customer_groups_csv("1", prefix="RLE")
    reports = [stack.run(stack.drop(f"groups-file/{company}/a.csv", data)) for company in ("usmf", "usrt")]
    assert [r.outcome for r in reports] == ["sent", "sent"], reports
    assert reports[0].job_id != reports[1].job_id
    assert len(stack.jobs()) == 2
    assert len(stack.messages(CUSTOMER_GROUPS_JOB)) == 2
    for report in reports:
        assert report.job_id is not None
        assert stack.until_finished(report.job_id) == "succeeded"
    archived = [n for n in stack.names(stack.settings.archive_container) if n.endswith("/a.csv")]
    assert len(archived) == 2


def test_processed_with_errors_fetches_the_execution_errors(make_stack) -> None:
    route = {
        **FILE_ROUTE,
        "name": "customers-file",
        "entity": "Customers V3",
        "entities": [{"entity": "Customers V3", "source_format": "CSV"}],
    }
    stack: ImportStack = make_stack([route])
    rows = [
        ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE"],
        ["RE-1", "Fine", "10", "USD"],
        ["RE-2", "Broken", "NOPE", "USD"],
    ]
    report = stack.run(stack.drop("customers-file/c.csv", csv_text(rows).encode()))
    assert report.outcome == "sent", report
    assert report.job_id is not None
    assert stack.until_finished(report.job_id) == "failed"
    [stored] = [n for n in stack.names(stack.settings.errors_container) if n.endswith("/c.csv")]
    record = stack.record(f"{stack.settings.errors_container}/{stored}")
    assert record["outcome"] == "failed"
    assert record["d365"]["status"] == "ProcessedWithErrors"
    assert record["d365"]["error_count"] >= 1
    assert record["correlation"]["execution_id"]
    assert any(f.endswith("target-error-keys.csv") for f in record["d365"]["error_files"])


def test_a_payload_the_connector_refuses_as_too_large_points_to_the_package_api(make_stack) -> None:
    stack: ImportStack = make_stack([FILE_ROUTE])
    stack.emulator.admin("PUT", "connector/settings", json={"max_enqueue_bytes": 1000})
    data = customer_groups_csv(*[str(n) for n in range(200)], prefix="TL")
    report = stack.run(stack.drop("groups-file/big.csv", data))
    assert (report.outcome, report.reason_code) == ("failed", "payload_too_large"), report
    assert "package API" in report.message
    assert report.stored_as is not None
    assert report.stored_as.startswith(stack.settings.errors_container)
    assert "HTTP 413" in stack.record(report.stored_as)["message"]
    assert [e["state"] for e in stack.ledger()] == ["not_sent"]  # a fixed re-drop may be sent
    assert stack.messages(CUSTOMER_GROUPS_JOB) == []
