"""Populate against the real stack when something is off: a record naming another legal entity, D365
unavailable while writing, the run's time limit, an ETag race (412), a whole ``$batch`` refused, values
whose comparison decides ``unchanged``, custom-service calls without an answer, and the HTTP pipeline's
error answers (in process; the function key is checked in test_populate_http.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from shared.context import AppContext
from shared.d365.batch import BatchRequest, BatchResult
from shared.d365.errors import D365ClientError
from shared.d365.odata import ODataClient
from shared.pipelines.populate import populate_request
from shared.populate.blob_input import RANGE_BYTES
from shared.populate.config import EntityTarget
from shared.populate.deadline import Deadline
from shared.populate.metadata import METADATA
from shared.populate.records import SourceRecord
from shared.populate.results import RecordOutcome
from shared.populate.run import entity_model
from shared.populate.writer import EntityWriter
from shared.settings import Settings
from tests.integration import test_populate_odata
from tests.integration.test_imports_stack import csv_text
from tests.integration.test_populate_odata import GROUPS, Make, by_record, drop_and_run, group, route
from tests.integration.test_populate_service import PER_RECORD
from tests.support.app_env import stack_env
from tests.support.d365 import faults
from tests.support.stack import AzuriteInfo, EmulatorInfo

make_stack = test_populate_odata.make_stack  # the same fixture: own containers, reset emulator

HTTP_TARGETS = [
    {"name": "groups", "entity_set": "CustomerGroups", "legal_entity": "usmf"},
    {"name": "broken", "entity_set": "NoSuchEntities", "legal_entity": "usmf"},
    {
        "name": "chosen",
        "entity_set": "CustomerGroups",
        "legal_entity": "usmf",
        "legal_entity_from_request": True,
    },
]
BATCH_503 = {"family": "odata", "path_prefix": "/data/$batch", "error_rate": 1, "error_status": 503}


@pytest.fixture
def context(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[AppContext]:
    env = stack_env(
        clean_emulator, azurite, POPULATE_HTTP_TARGETS=json.dumps(HTTP_TARGETS), D365_RETRY_MAX_SECONDS="2"
    )
    made = AppContext.from_settings(Settings.from_env(env))
    yield made
    made.close()


def post(context: AppContext, target: str, records: list[dict[str, Any]], **options: Any) -> Any:
    return populate_request(context, target, json.dumps(records).encode(), sleep=lambda s: None, **options)


def rows(context: AppContext, entity_set: str, **filters: str) -> list[dict[str, Any]]:
    where = " and ".join(f"{k} eq '{v}'" for k, v in filters.items())
    return list(context.odata.list(entity_set, filter=where, cross_company=True))


# -- the legal entity is the route's or the request's


def test_a_record_naming_another_legal_entity_fails_unless_the_route_allows_it(make_stack: Make) -> None:
    stack = make_stack([GROUPS, route(GROUPS, name="any", prefix="any/", allow_record_company=True)])
    data = csv_text(
        [["CustomerGroupId", "Description", "dataAreaId", "PaymentTermId"], ["LX1", "other", "demf", ""],
         ["LX2", "same", "USMF", ""], ["LX3", "route's", "", ""], ["LX4", "bad", "", "x" * 11]]
    ).encode()  # fmt: skip
    _, status = drop_and_run(stack, "groups/l.csv", data)
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3, 4)] == ["failed", "created", "created", "failed"]
    assert "dataAreaId 'demf': this target writes to legal entity 'usmf' only" in records[1]["error"]
    assert records[4]["key"] == {"dataAreaId": "usmf", "CustomerGroupId": "LX4"}  # the effective company
    assert group(stack, "LX1", "demf") is None
    assert group(stack, "LX2") is not None
    _, status = drop_and_run(stack, "any/l.csv", data)  # this route takes the record's company
    assert [by_record(status)[n]["outcome"] for n in (1, 2, 3)] == ["created", "unchanged", "unchanged"]
    assert group(stack, "LX1", "demf") is not None


def test_the_http_target_keeps_its_legal_entity(context: AppContext) -> None:
    answer = post(context, "groups", [{"CustomerGroupId": "BYP", "dataAreaId": "demf", "Description": "x"}])
    assert answer.status == 207
    assert answer.body["legal_entity"] == "usmf"
    assert "writes to legal entity 'usmf' only" in answer.body["records"][0]["error"]
    assert not rows(context, "CustomerGroups", CustomerGroupId="BYP")
    other = post(context, "groups", [{"CustomerGroupId": "B"}], legal_entity="demf")
    assert (other.status, other.body["error"]) == (400, "'groups' writes to legal entity 'usmf' only")
    bad = post(context, "chosen", [{"CustomerGroupId": "B"}], legal_entity="us mf")
    assert (bad.status, bad.body["error"]) == (400, "legal_entity 'us mf' must be 1-10 letters or digits")
    # a target that takes ?legal_entity= still refuses a record naming yet another one
    mixed = post(context, "chosen", [{"CustomerGroupId": "B", "dataAreaId": "usmf"}], legal_entity="demf")
    assert "writes to legal entity 'demf' only" in mixed.body["records"][0]["error"]


# -- D365 unavailable, the time limit


def test_an_outage_while_writing_leaves_the_file_for_a_later_try(make_stack: Make) -> None:
    stack = make_stack([GROUPS], D365_RETRY_MAX_SECONDS="1")
    entity_model(stack.context, "CustomerGroups")  # $metadata cached, as after an earlier file
    faults(stack.emulator, BATCH_503)
    stack.drop("groups/o.csv", csv_text([["CustomerGroupId", "Description"], ["OUT1", "x"]]).encode())
    report = stack.run("groups/o.csv")
    assert (report.outcome, report.reason_code) == ("deferred", "d365_unavailable"), report
    assert "D365 is unavailable" in report.message
    assert stack.names(stack.settings.inbound_container) == ["groups/o.csv"]  # left for the sweep
    assert [e["state"] for e in stack.ledger()] == ["not_sent"]
    faults(stack.emulator)
    report = stack.run("groups/o.csv")  # the monitor's sweep triggers it again
    assert report.outcome == "succeeded", report
    assert group(stack, "OUT1") is not None
    assert [e["state"] for e in stack.ledger()] == ["succeeded"]


def test_an_outage_answers_503_with_retry_after(context: AppContext, clean_emulator: EmulatorInfo) -> None:
    entity_model(context, "CustomerGroups")
    faults(clean_emulator, BATCH_503)
    answer = post(context, "groups", [{"CustomerGroupId": "O1"}, {"CustomerGroupId": "O2"}])
    assert answer.status == 503
    assert answer.headers == {"Retry-After": "30"}
    assert [r["outcome"] for r in answer.body["records"]] == ["not_attempted"] * 2
    assert "nothing was written" in answer.body["error"]


def test_the_time_limit_stops_the_run(context: AppContext) -> None:
    ticks = iter([0.0, 1.0] + [500.0] * 20)  # the limit is spent once the records are read
    answer = post(context, "groups", [{"CustomerGroupId": "T1"}], clock=lambda: next(ticks))
    assert answer.status == 503
    assert answer.body["records"][0]["outcome"] == "not_attempted"
    assert "time limit of 120 s" in answer.body["error"]
    assert not rows(context, "CustomerGroups", CustomerGroupId="T1")
    # a file whose time runs out mid-way: what was written stays written, the rest is not attempted
    now = [0.0]

    def clock() -> float:
        now[0] += 10
        return now[0]

    model = entity_model(context, "CustomerGroups")
    writer = EntityWriter(
        context.odata,
        model,
        EntityTarget("CustomerGroups", changeset="record"),
        legal_entity="usmf",
        max_batch_operations=1,
        deadline=Deadline(25, clock=clock),  # each call: 10 s,
    )
    result = writer.write([SourceRecord(n, {"CustomerGroupId": f"TL{n}"}, False) for n in (1, 2, 3)])
    assert [r.outcome for r in result.records] == [
        RecordOutcome.CREATED,
        RecordOutcome.NOT_ATTEMPTED,
        RecordOutcome.NOT_ATTEMPTED,
    ]
    assert not result.retry_later  # partly written: reported, not deferred


# -- ETags, a refused $batch


class ChangedUnderfoot(ODataClient):
    """The real client; another writer changes group 10 just before each of the first ``times`` writes."""

    def __init__(self, context: AppContext, times: int) -> None:
        super().__init__(context.transport)
        self.times, self.n = times, 0

    def execute_batch(self, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        if not batch.read_only and self.n < self.times:
            self.n += 1
            self.update(
                "CustomerGroups",
                {"dataAreaId": "usmf", "CustomerGroupId": "10"},
                {"TaxGroupId": f"T{self.n}"},
            )
        return super().execute_batch(batch, timeout=timeout)


def test_a_patch_is_guarded_by_the_etag_and_a_mismatch_is_read_again(context: AppContext) -> None:
    model = entity_model(context, "CustomerGroups")
    record = [SourceRecord(1, {"CustomerGroupId": "10", "Description": "Race"}, False)]
    target = EntityTarget("CustomerGroups")
    once = EntityWriter(ChangedUnderfoot(context, 1), model, target, legal_entity="usmf").write(record)
    assert once.records[0].outcome is RecordOutcome.UPDATED  # 412 (If-Match sent), read again, written
    assert once.records[0].note == (
        "written again after the record changed in D365 since it was read (ETag mismatch)"
    )
    assert once.stats["read_back"] == 1
    record = [SourceRecord(1, {"CustomerGroupId": "10", "Description": "Race 2"}, False)]
    always = EntityWriter(ChangedUnderfoot(context, 9), model, target, legal_entity="usmf").write(record)
    assert always.records[0].outcome is RecordOutcome.FAILED
    assert "kept changing in D365 while it was written" in (always.records[0].error or "")
    assert (
        rows(context, "CustomerGroups", CustomerGroupId="10", dataAreaId="usmf")[0]["Description"] == "Race"
    )


class RefuseFirstWrite(ODataClient):
    def __init__(self, context: AppContext, emulator: EmulatorInfo) -> None:
        super().__init__(context.transport)
        self.emulator, self.armed = emulator, False

    def execute_batch(self, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        if not batch.read_only and not self.armed:
            self.armed = True
            faults(self.emulator, {**BATCH_503, "error_status": 400, "count": 1})
        return super().execute_batch(batch, timeout=timeout)


def test_a_batch_refused_as_a_whole_is_split(context: AppContext, clean_emulator: EmulatorInfo) -> None:
    model = entity_model(context, "CustomerGroups")
    writer = EntityWriter(
        RefuseFirstWrite(context, clean_emulator),
        model,
        EntityTarget("CustomerGroups", changeset="record"),
        legal_entity="usmf",
    )
    result = writer.write([SourceRecord(n, {"CustomerGroupId": f"SP{n}"}, False) for n in (1, 2, 3)])
    assert [r.outcome for r in result.records] == [RecordOutcome.CREATED] * 3, result.to_dict()
    assert result.stats["resent"] == 3


# -- what decides "unchanged"


def test_typed_values_are_unchanged_when_written_again(context: AppContext) -> None:
    customers = EntityTarget("CustomersV3")
    vendors = EntityTarget("VendorsV2")
    customer = {"CustomerAccount": "TY-1", "CustomerGroupId": "10", "CreditLimit": "1500.500",
                "OnHoldStatus": "2", "CustomerType": "organization",
                "CreditLimitIsMandatory": "yes"}  # fmt: skip
    vendor = {"VendorAccountNumber": "TY-V", "VendorGroupId": "10", "CreatedDateTime": "2019-10-04"}
    stamped = {"VendorAccountNumber": "TY-W", "VendorGroupId": "10",
               "CreatedDateTime": "2024-05-01T10:30:00+02:00"}  # fmt: skip
    runs = []
    for _ in range(2):
        runs.append(
            [
                EntityWriter(context.odata, entity_model(context, t.entity_set), t, legal_entity="usmf")
                .write([SourceRecord(1, dict(values), from_text=True)])
                .records[0]
                .outcome
                for t, values in ((customers, customer), (vendors, vendor), (vendors, stamped))
            ]
        )
    assert runs == [[RecordOutcome.CREATED] * 3, [RecordOutcome.UNCHANGED] * 3]
    stored = rows(context, "VendorsV2", VendorAccountNumber="TY-V")[0]["CreatedDateTime"]
    assert stored.startswith("2019-10-04T12:00:00")  # a date-only value: noon UTC (ref §1.1)


def test_the_emulator_refuses_a_number_too_large_with_400(context: AppContext) -> None:
    with pytest.raises(D365ClientError, match="Cannot convert the literal") as caught:
        context.odata.create(
            "CustomersV3",
            {"dataAreaId": "usmf", "CustomerAccount": "BIG", "CustomerGroupId": "10", "CreditLimit": 10**400},
        )
    assert caught.value.status_code == 400


# -- custom services: an unanswered call is never repeated


def test_a_service_call_without_an_answer_is_uncertain_and_stops_the_file(make_stack: Make) -> None:
    stack = make_stack([PER_RECORD], D365_RETRY_MAX_SECONDS="1")
    path = "/api/services/EmuIntegrationServices/EmuContactService/upsertContact"
    faults(stack.emulator, {"family": "services", "method": "POST", "path_prefix": path, "error_rate": 1,
                            "error_status": 502, "count": 1})  # fmt: skip
    data = "\n".join(json.dumps({"ContactId": f"u-{n}", "Name": "U"}) for n in (1, 2)).encode()
    report, status = drop_and_run(stack, "contacts/u.ndjson", data)
    assert (report.outcome, report.reason_code) == ("failed", "needs_operator_check")
    records = by_record(status)
    assert (records[1]["outcome"], records[1]["uncertain"]) == ("failed", True)
    assert "may have been processed" in records[1]["note"]
    assert records[2]["outcome"] == "not_attempted"
    assert [e["state"] for e in stack.ledger()] == ["uncertain"]


def test_a_throttled_service_defers_the_file(make_stack: Make) -> None:
    stack = make_stack([PER_RECORD], D365_RETRY_MAX_SECONDS="1")
    path = "/api/services/EmuIntegrationServices/EmuContactService/upsertContact"
    faults(stack.emulator, {"family": "services", "method": "POST", "path_prefix": path, "error_rate": 1,
                            "error_status": 429, "retry_after": 1})  # fmt: skip
    stack.drop("contacts/t.ndjson", b'{"ContactId": "t-1", "Name": "T"}\n')
    report = stack.run("contacts/t.ndjson")
    assert (report.outcome, report.reason_code) == ("deferred", "d365_unavailable"), report
    assert stack.names(stack.settings.inbound_container) == ["contacts/t.ndjson"]
    assert [e["state"] for e in stack.ledger()] == ["not_sent"]


# -- the HTTP pipeline's error answers


def test_http_answers_for_metadata_trouble_and_a_misconfigured_target(
    context: AppContext, clean_emulator: EmulatorInfo
) -> None:
    broken = post(context, "broken", [{"X": "1"}])
    assert broken.status == 500
    assert "populate target 'broken' is misconfigured" in broken.body["error"]
    METADATA.clear()
    faults(clean_emulator, {"family": "odata", "path_prefix": "/data/$metadata", "error_rate": 1,
                            "error_status": 503})  # fmt: skip
    answer = post(context, "groups", [{"CustomerGroupId": "M1"}])
    assert answer.status == 502
    assert "could not read the entity's $metadata" in answer.body["error"]
    faults(clean_emulator)


# -- the input is read in ranges and hashed as it is read


def test_a_file_larger_than_one_range_is_read_in_ranges_and_hashed(make_stack: Make) -> None:
    stack = make_stack([route(GROUPS, max_records=2)])
    padding = " " * (RANGE_BYTES + 1000)  # the second record starts in the second range
    data = f'[{{"CustomerGroupId": "RG1"}},{padding}{{"CustomerGroupId": "RG2"}}]'.encode()
    report, status = drop_and_run(stack, "groups/r.json", data)
    assert report.outcome == "succeeded", report
    assert status["correlation"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert group(stack, "RG2") is not None
    bigger = data[:-1] + b',{"CustomerGroupId": "RG3"}' + padding.encode() + b"]"
    report, status = drop_and_run(stack, "groups/s.json", bigger)
    assert (report.outcome, report.reason_code) == ("rejected", "too_many_records")
    assert status["correlation"]["sha256"] == hashlib.sha256(bigger).hexdigest()


class BudgetSpy(ODataClient):
    """The real client, noting the time budget each $batch call was given."""

    def __init__(self, context: AppContext) -> None:
        super().__init__(context.transport)
        self.budgets: list[float | None] = []

    def execute_batch(self, batch: BatchRequest, *, timeout: float | None = None) -> BatchResult:
        self.budgets.append(timeout)
        return super().execute_batch(batch, timeout=timeout)


def test_a_call_in_flight_is_bounded_by_what_the_run_has_left(context: AppContext) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 4
        return now[0]

    spy = BudgetSpy(context)
    model = entity_model(context, "CustomerGroups")
    writer = EntityWriter(
        spy, model, EntityTarget("CustomerGroups"), legal_entity="usmf", deadline=Deadline(60, clock=clock)
    )
    result = writer.write([SourceRecord(1, {"CustomerGroupId": "BUD1"}, False)])
    assert [r.outcome for r in result.records] == [RecordOutcome.CREATED]
    assert spy.budgets, "no $batch call was made"
    budgets = [b for b in spy.budgets if b is not None]
    assert len(budgets) == len(spy.budgets), spy.budgets
    assert all(0 < b < 60 for b in budgets), budgets
    assert budgets == sorted(budgets, reverse=True)  # each later call gets what is left, no more
