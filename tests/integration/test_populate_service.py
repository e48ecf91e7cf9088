"""Custom-service import routes against the real stack: records sent to the emulator's sample
``EmuIntegrationServices/EmuContactService`` per record or as one list, with per-record results, and
values converted to the parameter types the operation's description declares."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.d365.errors import D365Error
from shared.d365.services import CustomServiceClient
from shared.populate.config import ServiceTarget
from shared.populate.service_params import SERVICE_DESCRIPTIONS, ServiceDescriptions
from tests.integration import test_populate_odata
from tests.integration.test_imports_stack import csv_text
from tests.integration.test_populate_odata import Make, by_record, drop_and_run
from tests.support.d365 import faults, logged

make_stack = test_populate_odata.make_stack  # the same fixture: own containers, reset emulator

SERVICE = {
    "target": "service", "service_group": "EmuIntegrationServices",
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
    assert [r["method"] for r in logged(stack.emulator, f"{PATH}/upsertContacts")].count("POST") == 1
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


SESSION = {"target": "service", "service_group": "UserSessionService",
           "service": "AifUserSessionService", "operation": "ApplyTimeZone", "key_fields": ["When"],
           "parameter_map": {"When": "dateTime", "Offset": "timeZoneOffset"}}  # fmt: skip
SESSION_PATH = "/api/services/UserSessionService/AifUserSessionService/ApplyTimeZone"


def bodies(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every body the real client sends (a spy: the calls still go to the emulator)."""
    sent: list[dict[str, Any]] = []
    real = CustomServiceClient.call

    def spy(self: CustomServiceClient, *args: Any, **kwargs: Any) -> Any:
        sent.append(dict(args[3] if len(args) > 3 else kwargs.get("payload") or {}))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(CustomServiceClient, "call", spy)
    return sent


def posts(stack: Any, path: str) -> int:
    return [r["method"] for r in logged(stack.emulator, path)].count("POST")


def test_csv_values_are_converted_to_the_described_parameter_types(
    make_stack: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    SERVICE_DESCRIPTIONS.clear()
    stack = make_stack([{**SESSION, "name": "session"}])
    sent = bodies(monkeypatch)
    rows = [
        ["When", "Offset"],
        ["2024-05-01 08:30Z", "3"],
        ["2024-05-01T08:30:00+02:00", " -2 "],
        ["yesterday", "1"],
        ["2024-05-01", "3.5"],
    ]
    report, status = drop_and_run(stack, "session/s.csv", csv_text(rows).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2, 3, 4)] == ["accepted", "accepted", "failed", "failed"]
    assert sent == [
        {"dateTime": "2024-05-01T08:30:00Z", "timeZoneOffset": 3},
        {"dateTime": "2024-05-01T06:30:00Z", "timeZoneOffset": -2},
    ]
    assert records[1]["note"] == '"2024-05-01T11:30:00"'  # D365's answer: local wall-clock time
    assert records[3]["error"] == (
        "field 'When' (parameter 'dateTime', type utcdatetime): 'yesterday' is not a date-time "
        "(utcdatetime, ISO 8601, e.g. 2024-05-01T08:30:00Z)"
    )
    assert (
        "field 'Offset' (parameter 'timeZoneOffset', type int): '3.5' is not a whole number"
        in (records[4]["error"])
    )
    assert status["details"]["populate"]["stats"] == {"calls": 2, "parameters_described": 1}
    assert posts(stack, SESSION_PATH) == 2  # the bad records were never sent
    # the description is cached like $metadata: a second file does not ask again
    drop_and_run(stack, "session/t.ndjson", b'{"When": "2024-05-01T00:00:00Z", "Offset": "1"}')
    assert sent[-1] == {"dateTime": "2024-05-01T00:00:00Z", "timeZoneOffset": 1}  # JSON text: converted
    assert [r["method"] for r in logged(stack.emulator, SESSION_PATH)].count("GET") == 1


def test_a_data_contract_parameter_takes_json_text_from_csv(
    make_stack: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    mapped = {
        **SERVICE,
        "name": "contacts",
        "operation": "upsertContact",
        "parameter_map": {"Contact": "_contact"},
    }
    stack = make_stack([mapped, {**SERVICE, "name": "lookups", "operation": "getContact",
                                 "parameter_map": {"Id": "_contactId"}}])  # fmt: skip
    rows = [["Contact"], ['{"ContactId": "j-1", "Name": "Jo", "Priority": 3}'], ["{not json"]]
    report, status = drop_and_run(stack, "contacts/j.csv", csv_text(rows).encode())
    assert report.outcome == "partially_succeeded"
    records = by_record(status)
    assert [records[n]["outcome"] for n in (1, 2)] == ["created", "failed"]
    assert "(parameter '_contact', type EmuContact): '{not json' is not a JSON object" in records[2]["error"]
    assert contact(stack, "J-1") == {"$id": "1", "ContactId": "J-1", "Name": "Jo", "Email": "", "Priority": 3}
    _, status = drop_and_run(stack, "lookups/l.csv", csv_text([["Id"], [" j-1"]]).encode())
    assert by_record(status)[1]["outcome"] == "accepted"  # str: the cell as read


def test_an_operation_without_a_description_gets_the_values_as_read(
    make_stack: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    SERVICE_DESCRIPTIONS.clear()
    stack = make_stack([{**SESSION, "name": "session"}])
    rule = {"family": "services", "method": "GET", "path_prefix": SESSION_PATH, "error_rate": 1,
            "error_status": 404}  # fmt: skip
    faults(stack.emulator, rule)
    sent = bodies(monkeypatch)
    rows = [["When", "Offset"], ["2024-05-01T08:30:00Z", "3"], ["yesterday", "1"]]
    _, status = drop_and_run(stack, "session/u.csv", csv_text(rows).encode())
    records = by_record(status)
    assert records[1]["outcome"] == "accepted"
    assert sent[0] == {"dateTime": "2024-05-01T08:30:00Z", "timeZoneOffset": "3"}  # as read
    assert "Error converting value \"yesterday\" to type 'utcdatetime'" in records[2]["error"]  # D365's
    assert status["details"]["populate"]["stats"] == {"calls": 2, "parameters_described": 0}


def test_descriptions_are_cached_for_a_while_and_for_a_bounded_number_of_operations(
    make_stack: Make,
) -> None:
    stack = make_stack([PER_RECORD])
    now = [0.0]
    cache = ServiceDescriptions(ttl_seconds=60, max_operations=2, clock=lambda: now[0])
    client = stack.context.services
    one, two, three = (
        ServiceTarget("EmuIntegrationServices", "EmuContactService", op)
        for op in ("upsertContact", "getContact", "upsertContacts")
    )
    described = cache.parameters(client, one)
    assert described is not None
    assert described.of("_CONTACT") == "EmuContact"
    assert cache.parameters(client, one) is described
    assert cache.downloads == 1
    assert cache.parameters(client, two) is not None
    assert cache.parameters(client, three).of("_contacts") == "List<EmuContact>"  # type: ignore[union-attr]
    assert len(cache) == 2  # the oldest was dropped
    now[0] = 61
    cache.parameters(client, three)
    assert cache.downloads == 4
    missing = ServiceTarget("EmuIntegrationServices", "EmuContactService", "noSuchOperation")
    assert cache.parameters(client, missing) is None  # 404: not described, values sent as read
