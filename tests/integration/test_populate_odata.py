"""OData import routes against the real stack: files dropped in Azurite, records written to the emulator's
entities over real HTTP, every file ending archived or in errors beside a status record listing each record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from shared.context import AppContext
from shared.d365.batch import BatchRequest, BatchResult
from shared.d365.odata import ODataClient
from shared.pipelines.imports import ImportSettings
from shared.populate.config import EntityTarget
from shared.populate.metadata import MetadataCache, UnknownEntitySet
from shared.populate.records import SourceRecord
from shared.populate.results import RecordOutcome
from shared.populate.run import entity_model
from shared.populate.writer import EntityWriter
from shared.settings import Settings
from tests.integration.test_imports_stack import ImportStack, csv_text, stack_env
from tests.support.d365 import faults, limits, logged
from tests.support.stack import AzuriteInfo, EmulatorInfo

GROUPS = {"name": "groups", "target": "odata", "entity_set": "CustomerGroups", "legal_entity": "usmf"}
CUSTOMERS = {"name": "customers", "target": "odata", "entity_set": "CustomersV3", "legal_entity": "usmf"}

Make = Callable[..., ImportStack]


@pytest.fixture
def make_stack(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Make]:
    """``make_stack(routes)``: an ImportStack (own containers, reset emulator) serving these routes."""
    made: list[ImportStack] = []

    def make(routes: list[dict[str, Any]], **overrides: str) -> ImportStack:
        env = stack_env(clean_emulator, azurite, IMPORT_ROUTES=json.dumps(routes), **overrides)
        context = AppContext.from_settings(Settings.from_env(env))
        settings = context.settings.section(ImportSettings)
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        made.append(ImportStack(context, settings, clean_emulator, azurite, service))
        return made[-1]

    yield make
    for stack in made:
        stack.context.close()
        stack.service.close()


def route(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**base, **changes}


def groups_csv(*rows: tuple[str, str]) -> bytes:
    return csv_text([["CustomerGroupId", "Description"], *[list(r) for r in rows]]).encode()


def drop_and_run(stack: ImportStack, name: str, data: bytes) -> tuple[Any, dict[str, Any]]:
    stack.drop(name, data)
    report = stack.run(name)
    assert report.stored_as, report
    return report, stack.record(report.stored_as)


def by_record(status: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {r["record"]: r for r in status["details"]["populate"]["records"]}


def group(stack: ImportStack, group_id: str, company: str = "usmf") -> dict[str, Any] | None:
    rows = stack.odata(
        "CustomerGroups", **{"$filter": f"CustomerGroupId eq '{group_id}' and dataAreaId eq '{company}'",
                             "cross-company": "true"}
    )  # fmt: skip
    return rows[0] if rows else None


def test_upsert_creates_updates_and_leaves_unchanged_with_a_status_record(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, mode="upsert")])
    data = groups_csv(("P1", "New group"), ("10", "Wholesale customers"), ("20", "Renamed majors"))
    report, status = drop_and_run(stack, "groups/g.csv", data)
    assert report.outcome == "succeeded", report
    assert report.stored_as.startswith(f"{stack.settings.archive_container}/groups/")
    assert status["outcome"] == "succeeded"
    assert status["correlation"]["route"] == "groups"
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3)] == ["created", "unchanged", "updated"]
    assert records[1]["key"] == {"dataAreaId": "usmf", "CustomerGroupId": "P1"}
    assert records[1]["line"] == 2
    assert status["details"]["populate"]["counts"] == {
        "created": 1, "updated": 1, "unchanged": 1, "accepted": 0, "failed": 0, "not_attempted": 0
    }  # fmt: skip
    assert group(stack, "P1")["Description"] == "New group"  # type: ignore[index]
    assert group(stack, "20")["Description"] == "Renamed majors"  # type: ignore[index]
    assert not stack.names(stack.settings.inbound_container)


def test_create_and_update_modes_report_what_they_refuse(make_stack: Make) -> None:
    stack = make_stack(
        [route(GROUPS, mode="create", name="create", prefix="create/"),
         route(GROUPS, mode="update", name="update", prefix="update/")]
    )  # fmt: skip
    report, status = drop_and_run(stack, "create/a.csv", groups_csv(("C1", "One"), ("10", "Other text")))
    assert (report.outcome, status["outcome"]) == ("partially_succeeded", "partially_succeeded")
    assert report.stored_as.startswith(f"{stack.settings.errors_container}/create/")
    records = by_record(status)
    assert records[1]["outcome"] == "created"
    assert records[2]["outcome"] == "failed"
    assert "mode 'create' never changes" in records[2]["error"]
    assert "partially written" in status["message"]
    report, status = drop_and_run(stack, "update/b.csv", groups_csv(("U404", "x"), ("C1", "Changed")))
    records = by_record(status)
    assert records[1]["outcome"] == "failed"
    assert "no record with this key" in records[1]["error"]
    assert records[2]["outcome"] == "updated"
    assert group(stack, "C1")["Description"] == "Changed"  # type: ignore[index]


def test_values_are_converted_to_the_entity_types_and_bad_values_fail_their_record(make_stack: Make) -> None:
    stack = make_stack([route(CUSTOMERS, changeset="record")])
    rows = [
        ["CustomerAccount", "OrganizationName", "CustomerGroupId", "CreditLimit", "CreditLimitIsMandatory",
         "OnHoldStatus", "CustomerType"],
        ["T-001", "Typed", "10", "1500.50", "yes", "2", "organization"],
        ["T-002", "Bad number", "10", "12,5", "No", "No", "Person"],
        ["T-003", "Bad enum", "10", "1", "Maybe", "No", "Person"],
        ["T-004", "Mandatory missing", "", "1", "No", "No", "Person"],
        ["T-005", "Unknown group", "ZZ", "1", "No", "No", "Person"],
    ]  # fmt: skip
    report, status = drop_and_run(stack, "customers/c.csv", csv_text(rows).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert records[1]["outcome"] == "created"
    assert "field 'CreditLimit': '12,5' is not a number" in records[2]["error"]
    assert "enum NoYes (No, Yes)" in records[3]["error"]
    assert "Field 'CustomerGroupId' must be filled in" in records[4]["error"]  # D365's own message
    assert "not found in the relating table 'Customer groups'" in records[5]["error"]
    row = stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'T-001'"})[0]
    assert (row["CreditLimit"], row["CreditLimitIsMandatory"], row["OnHoldStatus"]) == (1500.5, "Yes", "All")
    assert row["CustomerType"] == "Organization"
    assert not stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'T-002'"})


def test_a_changeset_failing_in_the_middle_sinks_no_other_record(make_stack: Make) -> None:
    stack = make_stack([route(CUSTOMERS, changeset="group", changeset_size=5)])
    payload = [{"CustomerAccount": f"M-{n}", "CustomerGroupId": "10"} for n in range(1, 6)]
    payload[2]["CustomerGroupId"] = "ZZ"  # only D365 knows: its validateWrite refuses record 3
    report, status = drop_and_run(stack, "customers/m.json", json.dumps(payload).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert [records[n]["outcome"] for n in range(1, 6)] == [
        "created",
        "created",
        "failed",
        "created",
        "created",
    ]
    assert "The value 'ZZ' in field 'CustomerGroupId' is not found" in records[3]["error"]
    assert status["details"]["populate"]["stats"]["resent"] == 4  # the innocent members, each on its own
    created = stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'M-*'"})
    assert sorted(c["CustomerAccount"] for c in created) == ["M-1", "M-2", "M-4", "M-5"]


def test_all_or_nothing_writes_nothing_when_one_record_fails(make_stack: Make) -> None:
    stack = make_stack([route(CUSTOMERS, all_or_nothing=True)])
    lines = [
        {"CustomerAccount": "A-1", "CustomerGroupId": "10"},
        {"CustomerAccount": "A-2", "CreditLimit": "x"},
    ]
    data = "\n".join(json.dumps(x) for x in lines).encode()
    report, status = drop_and_run(stack, "customers/a.ndjson", data)  # record 2 fails before any write
    assert (report.outcome, status["outcome"]) == ("failed", "failed")
    assert "all-or-nothing and record 2 failed" in by_record(status)[1]["error"]
    lines[1] = {"CustomerAccount": "A-2", "CustomerGroupId": "ZZ"}  # now D365 refuses it: all rolled back
    report, status = drop_and_run(
        stack, "customers/b.ndjson", "\n".join(json.dumps(x) for x in lines).encode()
    )
    assert report.outcome == "failed"
    assert "rolled back because record 2" in by_record(status)[1]["error"]
    assert "not found in the relating table" in by_record(status)[2]["error"]
    assert not stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'A-*'"})


def test_throttling_during_the_batch_is_waited_out(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, changeset_size=2)])
    # $metadata first (the cache is per process: whether an earlier test filled it must not matter), so
    # the two throttled requests are the $batch ones
    entity_model(stack.context, "CustomerGroups")
    limits(stack.emulator, resource={"next_requests": 2, "retry_after_seconds": 1})
    report, status = drop_and_run(stack, "groups/t.csv", groups_csv(("TH1", "a"), ("TH2", "b"), ("TH3", "c")))
    assert report.outcome == "succeeded", status["message"]
    assert [r["outcome"] for r in status["details"]["populate"]["records"]] == ["created"] * 3
    assert [r["status"] for r in logged(stack.emulator, "/data/$batch")].count(429) == 2


class FaultOnFirstWrite(ODataClient):
    """The real client; the emulator's fault rule is armed just before the first write ``$batch`` goes out."""

    def __init__(self, stack: ImportStack, rule: dict[str, Any]) -> None:
        super().__init__(stack.context.transport)
        self.stack, self.rule, self.armed = stack, rule, False

    def execute_batch(self, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        if not batch.read_only and not self.armed:
            self.armed = True
            faults(self.stack.emulator, self.rule)
        return super().execute_batch(batch, timeout=timeout)


def test_an_unanswered_batch_is_read_back_and_never_creates_twice(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS)])
    # the writes reach D365, then the connection drops mid-answer: the outcome is unknown to the client
    drop = {
        "family": "odata",
        "path_prefix": "/data/$batch",
        "drop_rate": 1,
        "drop_mode": "mid_body",
        "count": 1,
    }
    model = entity_model(stack.context, "CustomerGroups")
    writer = EntityWriter(
        FaultOnFirstWrite(stack, drop), model, EntityTarget("CustomerGroups"), legal_entity="usmf"
    )
    records = [SourceRecord(n, {"CustomerGroupId": f"UN{n}"}, from_text=True) for n in (1, 2)]
    result = writer.write(records)
    assert [r.outcome for r in result.records] == [RecordOutcome.CREATED] * 2, result.to_dict()
    assert all("confirmed" in (r.note or "") for r in result.records)
    assert result.stats["read_back"] == 2
    assert [r["status"] for r in logged(stack.emulator, "/data/$batch")].count(200) == 3  # read, write, read


def test_the_record_limit_points_to_the_dmf_route(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, max_records=2)])
    report, status = drop_and_run(stack, "groups/big.csv", groups_csv(("B1", "a"), ("B2", "b"), ("B3", "c")))
    assert (report.outcome, report.reason_code) == ("rejected", "too_many_records")
    assert "more than 2 records" in status["message"]
    assert "DMF route" in status["message"]
    assert group(stack, "B1") is None


def test_a_repeated_trigger_writes_nothing_again_and_a_redrop_is_unchanged(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, field_map={"Id": "CustomerGroupId", "Text": "Description"})])
    data = csv_text([["Id", "Text", "Ignored"], ["R1", "Once", "x"]]).encode()
    report, _ = drop_and_run(stack, "groups/r.csv", data)
    assert report.outcome == "succeeded"
    writes = len(logged(stack.emulator, "/data/$batch"))
    assert stack.run("groups/r.csv").outcome == "gone"  # the same trigger again: the file was handled
    assert len(logged(stack.emulator, "/data/$batch")) == writes
    report, status = drop_and_run(stack, "groups/r.csv", data)  # dropped again: written again, safely
    assert report.outcome == "succeeded"
    assert by_record(status)[1]["outcome"] == "unchanged"
    assert [e["state"] for e in stack.ledger()] == ["succeeded"]


def test_a_legal_entity_from_the_folder_and_unreadable_input(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, legal_entity_from="folder", legal_entity="")])
    report, status = drop_and_run(stack, "groups/DEMF/g.csv", groups_csv(("LE1", "In demf")))
    assert report.outcome == "succeeded"
    assert by_record(status)[1]["key"] == {"dataAreaId": "demf", "CustomerGroupId": "LE1"}
    assert group(stack, "LE1", "demf") is not None
    report, status = drop_and_run(stack, "groups/usmf/bad.json", b"[{not json")
    assert (report.outcome, report.reason_code) == ("rejected", "unreadable_records")
    assert "not valid JSON" in status["message"]


def test_metadata_is_downloaded_once_per_cache_period(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS)])
    now = [0.0]
    cache = MetadataCache(ttl_seconds=60, clock=lambda: now[0])
    first = cache.entity(stack.context.transport, "CustomersV3")
    assert cache.entity(stack.context.transport, "CustomersV3") is first
    assert cache.downloads == 1
    with pytest.raises(UnknownEntitySet, match="'customersv3' is not in the D365 \\$metadata"):
        cache.entity(stack.context.transport, "customersv3")
    now[0] = 61
    assert cache.entity(stack.context.transport, "CustomersV3").keys == ("dataAreaId", "CustomerAccount")
    assert cache.downloads == 3
    assert len(logged(stack.emulator, "/data/$metadata")) == 3
