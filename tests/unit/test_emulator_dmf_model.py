"""DMF executions, staging conversions and write-error parsing, without a server."""

from __future__ import annotations

import pytest

from emulator.dmf.datafiles import SourceRows
from emulator.dmf.definitions import DmfEntity
from emulator.dmf.model import (
    DmfError,
    DmfSettings,
    EntityExecution,
    EntityExecutionState,
    Execution,
    ExecutionError,
    ExecutionJournal,
    ExecutionStatus,
)
from emulator.dmf.packages import FieldMap, PackageError
from emulator.dmf.staging import ConversionError, convert, manifest_columns, stage_rows
from emulator.dmf.target import split_problems
from emulator.odata.catalog import CUSTOMERS
from emulator.odata.schema import Property

CUSTOMERS_DMF = DmfEntity("Customers V3", "CustCustomerV3Entity", CUSTOMERS)


def _execution(created: int = 0, failed: int = 0, staging_failed: int = 0) -> Execution:
    execution = Execution("job-1", "import", "Project", "usmf")
    item = EntityExecution("Customers V3", "CustomersV3", "CSV-Unicode", "usmf")
    item.staging_records, item.staging_errors = created + failed, staging_failed
    item.target_created, item.target_errors = created, failed
    item.target_status = EntityExecutionState.FINISHED
    execution.entities.append(item)
    return execution


@pytest.mark.parametrize(
    ("created", "failed", "staging_failed", "expected"),
    [
        (3, 0, 0, ExecutionStatus.SUCCEEDED),
        (0, 0, 0, ExecutionStatus.SUCCEEDED),  # an empty file imports nothing, successfully
        (2, 1, 0, ExecutionStatus.PARTIALLY_SUCCEEDED),
        (2, 0, 1, ExecutionStatus.PARTIALLY_SUCCEEDED),
        (0, 2, 1, ExecutionStatus.FAILED),
    ],
)
def test_outcome_from_the_rows(created: int, failed: int, staging_failed: int, expected: ExecutionStatus):
    execution = _execution(created, failed, staging_failed)
    execution.finish()
    assert execution.status is expected
    assert execution.done
    assert execution.wait(0)


def test_package_errors_fail_and_forced_status_wins():
    execution = _execution(created=5)
    execution.errors.append(ExecutionError("", "", "", "bad package", stage="package"))
    assert execution.outcome() is ExecutionStatus.FAILED
    assert execution.message_status() == "Processing"
    execution.forced_status = ExecutionStatus.CANCELED
    execution.finish()
    assert execution.status is ExecutionStatus.CANCELED


def test_message_status_and_execution_detail_contract():
    execution = _execution(created=2, failed=1)
    execution.finish()
    assert execution.message_status() == "ProcessedWithErrors"
    (detail,) = execution.execution_detail()
    assert set(detail) == {
        "EntityName",
        "Company",
        "StagingRecords",
        "StagingStatus",
        "StagingErrorCount",
        "TargetRecords",
        "TargetStatus",
        "TargetErrorCount",
        "ExecutionStartedDateTime",
        "ExecutionCompletedDateTime",
    }
    assert (detail["TargetRecords"], detail["TargetErrorCount"], detail["TargetStatus"]) == (2, 1, "Finished")


def test_journal_ids_are_unique_and_parallel_imports_refused():
    journal = ExecutionJournal()
    running = Execution("Job-A", "import", "P", "usmf")
    journal.add(running)
    assert journal.get("job-a") is running  # job ids compare case-insensitively
    with pytest.raises(DmfError, match="already used"):
        journal.add(Execution("JOB-A", "import", "P", "usmf"))
    with pytest.raises(DmfError, match="must not be called in parallel") as caught:
        journal.add(Execution("Job-B", "import", "P", "usmf"), exclusive=lambda other: other.kind == "import")
    assert caught.value.status == 500
    running.finish(ExecutionStatus.SUCCEEDED)
    journal.add(Execution("Job-B", "import", "P", "usmf", message_id="{ABC}"), exclusive=lambda o: True)
    assert journal.by_message('"abc"') is not None


def test_settings_are_checked():
    settings = DmfSettings()
    settings.update({"step_delay_seconds": 0, "reject_parallel_imports": False, "error_keys_polls": 3})
    assert settings.to_json()["error_keys_polls"] == 3
    for bad in ({"nope": 1}, {"error_keys_polls": -1}, {"strict_error_json": "yes"}):
        with pytest.raises(ValueError, match=r"DMF setting|non-negative|boolean"):
            settings.update(bad)


def _prop(name: str) -> Property:
    prop = CUSTOMERS.property(name)
    assert prop is not None
    return prop


def test_conversions_from_file_text():
    assert convert(_prop("CreditLimit"), " 1,234.50 ") == 1234.5
    assert convert(_prop("CreditLimit"), "") is None
    assert convert(_prop("OnHoldStatus"), "all") == "All"
    assert convert(_prop("CreatedDateTime"), "2024-03-01 13:45:00") == "2024-03-01T13:45:00Z"
    assert convert(_prop("CreatedDateTime"), "3/1/2024 1:45:00 PM") == "2024-03-01T13:45:00Z"
    assert convert(_prop("CreatedDateTime"), "2024-03-01T14:45:00+01:00") == "2024-03-01T13:45:00Z"
    assert convert(Property("N", "Edm.Int32"), "7.0") == 7
    assert convert(Property("B", "Edm.Boolean"), "Yes") is True
    for prop, text in (
        (_prop("CreditLimit"), "ten"),
        (_prop("OnHoldStatus"), "Maybe"),
        (Property("N", "Edm.Int32"), "7.5"),
        (_prop("CreatedDateTime"), "yesterday"),
    ):
        with pytest.raises(ConversionError, match=text):
            convert(prop, text)


def test_staging_maps_columns_and_catches_duplicates():
    columns = manifest_columns(
        CUSTOMERS_DMF, [FieldMap("Account", "CUSTOMERACCOUNT"), FieldMap("Limit", "CREDITLIMIT")]
    )
    source = SourceRows(
        ["Account", "Limit"],
        [
            (2, {"Account": "C-1", "Limit": "5"}),
            (3, {"account": "c-1", "limit": "6"}),
            (4, {"Account": "C-2", "Limit": "x"}),
        ],
    )
    result = stage_rows(CUSTOMERS_DMF, columns, source, "usmf")
    assert [r.values for r in result.rows] == [
        {"CustomerAccount": "C-1", "CreditLimit": 5.0, "dataAreaId": "usmf"}
    ]
    assert [(f.line, f.problems[0][0]) for f in result.failures] == [(3, ""), (4, "CreditLimit")]
    assert "already exists" in result.failures[0].problems[0][1]
    with pytest.raises(PackageError, match="staging field 'NOPE' does not exist"):
        manifest_columns(CUSTOMERS_DMF, [FieldMap("X", "NOPE")])


def test_write_errors_split_into_one_problem_per_infolog_line():
    message = (
        "Write failed for table row of type 'CustCustomerV3Entity'. Infolog: Warning: Field "
        "'CustomerGroupId' must be filled in. Warning: The value 'X' in field 'PaymentTerms' is not found."
    )
    problems = split_problems(message)
    assert [field for field, _ in problems] == ["CustomerGroupId", "PaymentTerms"]
    assert problems[0][1].startswith("Field 'CustomerGroupId' must be filled in.\nWrite failed")
    assert split_problems("Company 'zz' does not exist.") == [("", "Company 'zz' does not exist.")]


def test_finished_executions_fit_the_dmf_business_event_contracts():
    from emulator.business_events.catalog import event_definition
    from emulator.business_events.payloads import contract_fields
    from emulator.dmf import events

    execution = _execution(created=2, failed=1)
    execution.entities[0].file_name = "Customers V3.csv"
    execution.finish()
    fields = events._import_fields(execution, execution.entities[0], 5637144576)
    checked = contract_fields(event_definition(events.IMPORT_EVENT), fields, legal_entity="usmf")
    assert checked["Status"] == "Partially succeeded"
    assert (checked["NoOfRecords"], checked["NoOfCreatedRecords"], checked["FileName"]) == (
        3,
        2,
        "Customers V3.csv",
    )
