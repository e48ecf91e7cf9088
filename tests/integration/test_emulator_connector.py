"""The emulator's recurring-integrations API (``/api/connector``, ref §4) over real HTTP with a real token:
enqueue -> asynchronous processing by the DMF engine -> rows in the entity store, jobstatus and the
message-status actions, the authorization policy, the size limit, and processing order.
Exports (dequeue / download / ack / redelivery): test_emulator_connector_exports.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.connector import CUSTOMER_GROUPS_FILE_IMPORT_ID, CUSTOMERS_EXPORT_ID, PACKAGE_IMPORT_ID
from shared.d365.transport import D365Transport
from tests.support.d365 import FAST_CONNECTOR, connector_at_test_pace, make_transport
from tests.support.stack import EmulatorInfo

TERMINAL = {"Processed", "ProcessedWithErrors", "PreProcessingError", "PostProcessingFailed"}
ACTIONS = "data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities"
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def connector(clean_emulator: EmulatorInfo) -> EmulatorInfo:
    """A reset emulator whose connector and DMF engine run at test pace."""
    return connector_at_test_pace(clean_emulator)


@pytest.fixture(scope="module")
def d365(emulator: EmulatorInfo) -> Iterator[D365Transport]:
    transport = make_transport(emulator)
    yield transport
    transport.close()


def enqueue(
    d365: D365Transport,
    activity_id: str,
    body: bytes,
    *,
    entity: str | None = None,
    company: str | None = None,
    external_id: str | None = None,
    ok: tuple[int, ...] = (),
) -> Any:
    params = {k: v for k, v in (("entity", entity), ("company", company)) if v}
    headers = {"x-ms-dyn-externalidentifier": external_id} if external_id else {}
    return d365.request(
        "POST",
        f"api/connector/enqueue/{activity_id}",
        params=params,
        data=body,
        headers=headers,
        idempotent=False,
        ok_statuses=ok,
    )


def message_id_of(response: Any) -> str:
    """The enqueue answer is the message id as a JSON string literal, quotes included (ref §4.2)."""
    text: str = response.text
    assert text.startswith('"'), text
    assert text.endswith('"'), text
    message_id = text.strip('"')
    uuid.UUID(message_id)
    return message_id


def message_status(d365: D365Transport, message_id: str) -> str:
    answer = d365.request("POST", f"{ACTIONS}.GetMessageStatus", json={"messageId": message_id}).json()
    return str(answer["value"])


def wait_terminal(d365: D365Transport, message_id: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        status = message_status(d365, message_id)
        if status in TERMINAL or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def job_status(d365: D365Transport, activity_id: str, message_id: str) -> dict[str, Any]:
    response = d365.request("GET", f"api/connector/jobstatus/{activity_id}", params={"jobId": message_id})
    body: dict[str, Any] = response.json()
    return body


def customer_groups_csv(*rows: tuple[str, str]) -> bytes:
    lines = ["CUSTOMERGROUPID,DESCRIPTION", *(f"{group},{text}" for group, text in rows)]
    return ("\r\n".join(lines) + "\r\n").encode()


def odata_rows(d365: D365Transport, path: str, filter_: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = d365.request("GET", f"data/{path}", params={"$filter": filter_}).json()[
        "value"
    ]
    return rows


# --- imports ----------------------------------------------------------------------------------------------


def test_file_enqueue_goes_through_the_states_into_the_store(
    connector: EmulatorInfo, d365: D365Transport
) -> None:
    connector.admin("PUT", "connector/settings", json={"paused": True})
    body = customer_groups_csv(("RI-10", "Recurring wholesale"), ("RI-20", "Recurring retail"))
    response = enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, body, entity="Customer groups",
                       external_id="groups-001.csv")  # fmt: skip
    assert response.status_code == 200
    message_id = message_id_of(response)

    # queued, not picked up: Enqueued everywhere, no execution yet
    assert message_status(d365, message_id) == "Enqueued"
    execution = d365.request("POST", f"{ACTIONS}.GetExecutionIdByMessageId", json={"_messageId": message_id})
    assert execution.json()["value"] == EMPTY_GUID
    queued = job_status(d365, f"{{{CUSTOMER_GROUPS_FILE_IMPORT_ID.upper()}}}", f'"{message_id}"')
    assert queued["DataJobStatus"]["DataJobState"] == "Enqueued"
    assert queued["DataJobStatus"]["ExternalIdentifier"] == "groups-001.csv"
    assert queued["ExecutionDetail"] == []

    connector.admin("PUT", "connector/settings", json={"paused": False})
    seen = {message_status(d365, message_id)}
    deadline = time.monotonic() + 30
    while not seen & TERMINAL and time.monotonic() < deadline:
        seen.add(message_status(d365, message_id))
        time.sleep(0.01)
    assert "Processed" in seen
    assert seen & {"Preprocessing", "Processing"}, seen  # asynchronous, observable intermediate states

    detail = job_status(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, message_id)
    status = detail["DataJobStatus"]
    assert status["DataJobState"] == "Processed"
    assert status["DataJobIdentifier"] == message_id
    assert status["DataProject"]
    assert status["DataJobStartedDateTime"] <= status["DataJobCompletedDateTime"]
    assert status["ExecutionIdentifier"]
    assert status["ExecutionIdentifier"] != message_id
    assert isinstance(detail["ExecutionLog"], str)
    [entity] = detail["ExecutionDetail"]
    assert entity["EntityName"] == "Customer groups"
    assert entity["TargetRecords"] == 2
    assert entity["TargetErrorCount"] == 0
    assert entity["TargetStatus"] == "Finished"

    execution = d365.request("POST", f"{ACTIONS}.GetExecutionIdByMessageId", json={"_messageId": message_id})
    assert execution.json()["value"] == status["ExecutionIdentifier"]
    summary = d365.request(
        "POST", f"{ACTIONS}.GetExecutionSummaryStatus", json={"executionId": status["ExecutionIdentifier"]}
    )
    assert summary.json()["value"] == "Succeeded"
    rows = odata_rows(d365, "CustomerGroups", "CustomerGroupId eq 'RI-*'")
    assert {(r["CustomerGroupId"], r["Description"]) for r in rows} == {
        ("RI-10", "Recurring wholesale"),
        ("RI-20", "Recurring retail"),
    }


def test_file_with_bad_rows_is_processed_with_errors(connector: EmulatorInfo, d365: D365Transport) -> None:
    too_long = "X" * 25  # CustomerGroupId holds 10 characters
    body = customer_groups_csv(("RI-30", "Good"), (too_long, "Bad"), ("RI-31", "Good too"))
    message_id = message_id_of(
        enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, body, entity="Customer groups", company="USMF")
    )
    assert wait_terminal(d365, message_id) == "ProcessedWithErrors"
    detail = job_status(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, message_id)
    assert detail["DataJobStatus"]["DataJobState"] == "ProcessedWithErrors"
    [entity] = detail["ExecutionDetail"]
    assert entity["StagingErrorCount"] + entity["TargetErrorCount"] == 1
    assert entity["Company"].lower() == "usmf"
    rows = odata_rows(d365, "CustomerGroups", "CustomerGroupId eq 'RI-3*'")
    assert sorted(r["CustomerGroupId"] for r in rows) == ["RI-30", "RI-31"]


def test_package_enqueue_imports_the_sample_package(
    connector: EmulatorInfo, d365: D365Transport, samples_dir: Path
) -> None:
    package = (samples_dir / "packages" / "usmf_asset-major-types-01.zip").read_bytes()
    message_id = message_id_of(enqueue(d365, PACKAGE_IMPORT_ID, package, external_id="asset-types.zip"))
    assert wait_terminal(d365, message_id) == "Processed"
    rows = odata_rows(d365, "FixedAssetMajorTypes", "dataAreaId eq 'usmf'")
    assert {"COMP", "VEHICLES", "PATENTS"} <= {r["MajorTypeId"] for r in rows}
    detail = job_status(d365, PACKAGE_IMPORT_ID, message_id)
    assert [e["EntityName"] for e in detail["ExecutionDetail"]] == ["Fixed asset major type"]
    assert detail["ExecutionDetail"][0]["TargetRecords"] == 11

    broken = enqueue(d365, PACKAGE_IMPORT_ID, b"this is not a zip file")
    message_id = message_id_of(broken)
    assert wait_terminal(d365, message_id) == "PreProcessingError"
    detail = job_status(d365, PACKAGE_IMPORT_ID, message_id)
    assert detail["DataJobStatus"]["DataJobState"] == "PreProcessError"
    assert detail["ExecutionLog"]


def test_enqueue_refusals(connector: EmulatorInfo, d365: D365Transport) -> None:
    body = customer_groups_csv(("RI-40", "x"))
    no_entity = enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, body, ok=(400,))
    assert no_entity.status_code == 400
    assert "entity" in no_entity.json()["error"]["message"]
    unknown = enqueue(d365, str(uuid.uuid4()), body, entity="Customer groups", ok=(404,))
    assert unknown.status_code == 404
    export_job = enqueue(d365, CUSTOMERS_EXPORT_ID, body, ok=(400,))
    assert export_job.status_code == 400
    unknown_job = d365.request(
        "GET", f"api/connector/jobstatus/{PACKAGE_IMPORT_ID}", params={"jobId": str(uuid.uuid4())},
        ok_statuses=(404,),
    )  # fmt: skip
    assert unknown_job.status_code == 404
    unknown_message = d365.request(
        "POST", f"{ACTIONS}.GetMessageStatus", json={"messageId": str(uuid.uuid4())}, ok_statuses=(400,)
    )
    assert unknown_message.status_code == 400


def test_enqueue_over_the_size_limit_is_413(connector: EmulatorInfo, d365: D365Transport) -> None:
    assert connector.admin("GET", "connector/settings")["max_enqueue_bytes"] == 30_000_000
    connector.admin("PUT", "connector/settings", json={"max_enqueue_bytes": 1000})
    big = b"CUSTOMERGROUPID,DESCRIPTION\r\n" + b"RI-50,padding\r\n" * 200
    declared = enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, big, entity="Customer groups", ok=(413,))
    assert declared.status_code == 413
    streamed = d365.request(  # no Content-Length: the limit is enforced while the body streams in
        "POST",
        f"api/connector/enqueue/{CUSTOMER_GROUPS_FILE_IMPORT_ID}",
        params={"entity": "Customer groups"},
        data=iter([big[:600], big[600:]]),
        idempotent=False,
        ok_statuses=(413,),
    )
    assert streamed.status_code == 413
    assert connector.admin("GET", "connector/messages")["messages"] == []
    small = enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, big[:900], entity="Customer groups")
    assert small.status_code == 200


def test_authorization_policy_of_the_job(connector: EmulatorInfo, d365: D365Transport) -> None:
    other_app = str(uuid.uuid4())
    created = connector.admin(
        "POST",
        "connector/activities",
        json={"name": "locked", "direction": "import", "job_type": "File", "data_project": "Locked",
              "entity": "Customer groups", "allowed_app_ids": [other_app]},
    )  # fmt: skip
    locked = created["activity_id"]
    body = customer_groups_csv(("RI-60", "x"))
    refused = enqueue(d365, locked, body, entity="Customer groups", ok=(401,))
    assert refused.status_code == 401
    assert "authorization policy" in refused.json()["error"]["message"]
    for path in (f"dequeue/{locked}", f"jobstatus/{locked}?jobId={uuid.uuid4()}"):
        assert d365.request("GET", f"api/connector/{path}", ok_statuses=(401,)).status_code == 401

    connector.admin(
        "PATCH", f"connector/activities/{locked}", json={"allowed_app_ids": [connector.client_id]}
    )
    assert enqueue(d365, locked, body, entity="Customer groups").status_code == 200


def test_process_messages_in_order(connector: EmulatorInfo, d365: D365Transport) -> None:
    """In-order jobs start their messages in enqueue order; other jobs promise no order (the emulator
    starts the most recent waiting message first)."""
    unordered = connector.admin(
        "POST",
        "connector/activities",
        json={
            "name": "unordered",
            "job_type": "File",
            "data_project": "Unordered",
            "process_in_order": False,
        },
    )["activity_id"]
    connector.admin("PUT", "connector/settings", json={"paused": True})
    ordered_ids, unordered_ids = [], []
    for n in range(3):
        body = customer_groups_csv((f"RI-7{n}", f"step {n}"))
        ordered_ids.append(
            message_id_of(enqueue(d365, CUSTOMER_GROUPS_FILE_IMPORT_ID, body, entity="Customer groups"))
        )
        unordered_ids.append(message_id_of(enqueue(d365, unordered, body, entity="Customer groups")))
    time.sleep(FAST_CONNECTOR["pickup_delay_seconds"] * 2)  # all six are due: the worker chooses among them
    connector.admin("PUT", "connector/settings", json={"paused": False})
    for message_id in ordered_ids + unordered_ids:
        assert wait_terminal(d365, message_id) == "Processed"

    def started(ids: list[str]) -> list[str]:
        journal = {m["message_id"]: m for m in connector.admin("GET", "connector/messages")["messages"]}
        return sorted(ids, key=lambda i: journal[i]["pickup_order"])

    assert started(ordered_ids) == ordered_ids
    assert started(unordered_ids) == list(reversed(unordered_ids))


def test_reset_restores_the_seeded_jobs(connector: EmulatorInfo, d365: D365Transport) -> None:
    extra = connector.admin(
        "POST", "connector/activities", json={"job_type": "DataPackage", "data_project": "Extra"}
    )["activity_id"]
    enqueue(d365, PACKAGE_IMPORT_ID, b"not a package")
    connector.admin("PUT", "connector/settings", json={"visibility_timeout_seconds": 1})
    connector.admin("POST", "reset")
    ids = {a["activity_id"] for a in connector.admin("GET", "connector/activities")["activities"]}
    assert ids == {CUSTOMER_GROUPS_FILE_IMPORT_ID, PACKAGE_IMPORT_ID, CUSTOMERS_EXPORT_ID}
    assert extra not in ids
    assert connector.admin("GET", "connector/messages")["messages"] == []
    assert connector.admin("GET", "connector/settings")["visibility_timeout_seconds"] == 1800
