"""Custom-service import routes against the real stack: records sent to the emulator's sample
``EmuIntegrationServices/EmuContactService`` per record or as one list, with per-record results."""

from __future__ import annotations

import json
from typing import Any

from shared.d365.errors import D365Error
from tests.integration import test_populate_odata
from tests.integration.test_imports_stack import csv_text
from tests.integration.test_populate_odata import Make, by_record, drop_and_run
from tests.support.d365 import logged

make_stack = test_populate_odata.make_stack  # the same fixture: own containers, reset emulator

SERVICE = {
    "target": "service", "legal_entity": "usmf", "service_group": "EmuIntegrationServices",
    "service": "EmuContactService", "key_fields": ["ContactId"],
}  # fmt: skip
PER_RECORD = {**SERVICE, "name": "contacts", "operation": "upsertContact", "record_parameter": "_contact"}
WHOLE_FILE = {**SERVICE, "name": "contact-lists", "operation": "upsertContacts", "call": "whole_file",
              "records_parameter": "_contacts"}  # fmt: skip
PATH = "/api/services/EmuIntegrationServices/EmuContactService"


def contact(stack: Any, contact_id: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = stack.context.services.call(
            "EmuIntegrationServices", "EmuContactService", "getContact", {"_contactId": contact_id}
        )
    except D365Error:
        return None
    return found


def test_one_call_per_record_with_the_x_plus_plus_error_of_a_bad_record(make_stack: Make) -> None:
    stack = make_stack([PER_RECORD])
    lines = [
        {"ContactId": "c-1", "Name": "Ann", "Email": "ann@example.com", "Priority": 2},
        {"ContactId": "c-2", "Name": "Bob", "Email": "not-an-address"},
        {"ContactId": "c-3", "Name": "Cy", "Priority": "4"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    report, status = drop_and_run(stack, "contacts/c.ndjson", data)
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3)] == ["created", "failed", "created"]
    assert records[1]["key"] == {"ContactId": "c-1"}
    assert "The e-mail address 'not-an-address' of contact C-2 is not valid." in records[2]["error"]
    assert status["details"]["populate"]["stats"]["calls"] == 3
    assert contact(stack, "C-3")["Priority"] == 4  # type: ignore[index]
    assert contact(stack, "C-2") is None
    assert len([r for r in logged(stack.emulator, f"{PATH}/upsertContact") if r["method"] == "POST"]) == 3


def test_one_call_for_the_whole_file_read_back_per_record(make_stack: Make) -> None:
    stack = make_stack([WHOLE_FILE])
    rows = [
        ["ContactId", "Name", "Email"],
        ["w-1", "Wes", "wes@example.com"],
        ["w-2", "", ""],
        ["w-3", "Vi", ""],
    ]
    report, status = drop_and_run(stack, "contact-lists/w.csv", csv_text(rows).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3)] == ["created", "failed", "created"]
    assert "Field 'Name' must be filled in for contact W-2." in records[2]["error"]
    assert len(logged(stack.emulator, f"{PATH}/upsertContacts")) == 1
    report, status = drop_and_run(stack, "contact-lists/w2.csv", csv_text(rows[:2]).encode())
    assert by_record(status)[1]["outcome"] == "unchanged"


def test_fields_mapped_to_top_level_parameters_and_an_answer_that_says_no_outcome(make_stack: Make) -> None:
    lookup = {**SERVICE, "name": "lookups", "operation": "getContact", "parameter_map": {"Id": "_contactId"}}
    stack = make_stack([PER_RECORD, lookup])
    drop_and_run(stack, "contacts/one.json", json.dumps([{"ContactId": "L-1", "Name": "Lu"}]).encode())
    rows = [["Id", "Other"], ["L-1", "not sent"], ["L-404", "x"]]
    report, status = drop_and_run(stack, "lookups/l.csv", csv_text(rows).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert records[1]["outcome"] == "accepted"  # the service ran and did not say what it did
    assert '"ContactId": "L-1"' in records[1]["note"]
    assert records[2]["outcome"] == "failed"
    assert "Contact L-404 does not exist." in records[2]["error"]
