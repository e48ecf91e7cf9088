"""ConnectorClient (shared/d365/connector.py) against the emulator's recurring-integrations API over HTTP,
plus the client's tolerant parsing of the shapes the reference leaves UNCONFIRMED (ref §4.2, §4.3)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator

import pytest

from shared.d365.connector import (
    ConnectorClient,
    ConnectorResponseError,
    DataJobState,
    DequeuedMessage,
    EnqueueTooLargeError,
    JobStatus,
    _message_id,
    download_url,
    https_download_url,
    parse_job_status,
)
from shared.d365.errors import D365NotFoundError, D365ServerError
from shared.d365.transport import D365Transport
from shared.packages.validate import validate_package
from tests.support.d365 import faults, logged, make_transport
from tests.support.stack import EmulatorInfo

FILE_IMPORT = "0a1b2c3d-d365-4e11-8f00-00000000d001"  # "Customer groups" File job (emulator seed)
PACKAGE_IMPORT = "0a1b2c3d-d365-4e11-8f00-00000000d002"
CUSTOMERS_EXPORT = "0a1b2c3d-d365-4e11-8f00-00000000d101"


@pytest.fixture
def connector_emulator(clean_emulator: EmulatorInfo) -> EmulatorInfo:
    clean_emulator.admin("PUT", "connector/settings", json={"pickup_delay_seconds": 0, "step_seconds": 0.05})
    return clean_emulator


@pytest.fixture
def transport(connector_emulator: EmulatorInfo) -> Iterator[D365Transport]:
    with make_transport(connector_emulator) as t:
        yield t


@pytest.fixture
def client(transport: D365Transport) -> ConnectorClient:
    return ConnectorClient(transport)


def csv_unicode(text: str) -> bytes:
    return b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")


def wait_final(client: ConnectorClient, activity: str, message_id: str, timeout: float = 30) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = client.job_status(activity, message_id)
        if status.state.final or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_enqueue_a_file_and_follow_its_job_status(client: ConnectorClient, connector_emulator) -> None:
    group = f"T{uuid.uuid4().hex[:6].upper()}"
    body = csv_unicode(f"CUSTOMERGROUPID,DESCRIPTION\n{group},Enqueued by the client test\n")
    message_id = client.enqueue(
        FILE_IMPORT, io.BytesIO(body), entity="Customer groups", company="usmf", external_id="groups.csv"
    )
    uuid.UUID(message_id.strip("{}"))  # a GUID, quotes stripped
    status = wait_final(client, FILE_IMPORT, message_id)
    assert status.state is DataJobState.PROCESSED, status.raw
    assert status.state.succeeded
    assert status.execution_id
    assert status.raw["DataJobStatus"]["ExternalIdentifier"] == "groups.csv"
    assert [d.entity_name for d in status.details] == ["Customer groups"]
    (request,) = logged(connector_emulator, f"/api/connector/enqueue/{FILE_IMPORT}")
    assert request["status"] == 200


def test_a_bad_file_ends_in_an_error_state(client: ConnectorClient) -> None:
    too_long = "X" * 40  # CustomerGroupId holds 10 characters
    body = csv_unicode(f"CUSTOMERGROUPID,DESCRIPTION\n{too_long},Too long\n")
    message_id = client.enqueue(FILE_IMPORT, body, entity="Customer groups")
    status = wait_final(client, FILE_IMPORT, message_id)
    assert status.state.final
    assert not status.state.succeeded


def test_enqueue_over_the_size_limit_suggests_the_package_api(
    client: ConnectorClient, connector_emulator
) -> None:
    connector_emulator.admin("PUT", "connector/settings", json={"max_enqueue_bytes": 1000})
    with pytest.raises(EnqueueTooLargeError) as caught:
        client.enqueue(PACKAGE_IMPORT, b"x" * 5000, content_type="application/zip")
    assert caught.value.status_code == 413
    assert "package API" in str(caught.value)


def test_enqueue_is_not_resent_after_a_server_error(client: ConnectorClient, connector_emulator) -> None:
    faults(
        connector_emulator,
        {
            "family": "connector",
            "path_prefix": "/api/connector/enqueue",
            "error_rate": 1.0,
            "error_status": 503,
            "count": 1,
        },
    )
    with pytest.raises(D365ServerError):
        client.enqueue(FILE_IMPORT, csv_unicode("CUSTOMERGROUPID\nX\n"), entity="Customer groups")
    assert len(logged(connector_emulator, f"/api/connector/enqueue/{FILE_IMPORT}")) == 1


def test_enqueue_is_resent_after_a_refused_connection_only_when_nothing_was_sent(
    client, connector_emulator
) -> None:
    # a drop before any answer may have enqueued already: no resend (at most once from the client's side)
    faults(
        connector_emulator,
        {"family": "connector", "path_prefix": "/api/connector/enqueue", "drop_rate": 1.0, "count": 1},
    )
    with pytest.raises(Exception, match="not_idempotent"):
        client.enqueue(FILE_IMPORT, io.BytesIO(csv_unicode("CUSTOMERGROUPID\nX\n")), entity="Customer groups")


def test_dequeue_download_ack_round_trip(client: ConnectorClient, connector_emulator, tmp_path) -> None:
    assert client.dequeue(CUSTOMERS_EXPORT) is None  # 204: nothing exported yet
    connector_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT}/export")
    message = client.dequeue(CUSTOMERS_EXPORT)
    assert message is not None
    assert message.last_dequeued is None
    assert message.raw.startswith(b"{")
    assert "PopReceipt" not in repr(message)  # the repr stays short and receipt-free

    target = tmp_path / "export.zip"
    with target.open("wb") as sink:
        size = client.download_to(message, sink)
    assert size == target.stat().st_size > 0
    with target.open("rb") as stream:
        package = validate_package(stream)
    assert package.manifest.entities

    client.ack(CUSTOMERS_EXPORT, message)
    client.ack(CUSTOMERS_EXPORT, message)  # acking twice is harmless (retries may repeat it)
    acks = logged(connector_emulator, f"/api/connector/ack/{CUSTOMERS_EXPORT}")
    assert [a["status"] for a in acks] == [200, 200]
    assert client.dequeue(CUSTOMERS_EXPORT) is None


def test_streamed_download_survives_a_mid_body_drop(client: ConnectorClient, connector_emulator) -> None:
    connector_emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT}/export")
    message = client.dequeue(CUSTOMERS_EXPORT)
    assert message is not None
    with client.download(message) as response:
        expected = response.content
    faults(
        connector_emulator,
        {
            "family": "connector",
            "path_prefix": "/api/connector/download",
            "drop_rate": 1.0,
            "drop_mode": "mid_body",
            "count": 1,
        },
    )
    sink = io.BytesIO()
    assert client.download_to(message, sink, chunk_size=1024) == len(expected)
    assert sink.getvalue() == expected


def test_job_status_of_an_unknown_message(client: ConnectorClient) -> None:
    with pytest.raises(D365NotFoundError):
        client.job_status(FILE_IMPORT, str(uuid.uuid4()))


# -- parsing of the UNCONFIRMED shapes (no emulator needed)


@pytest.mark.parametrize(
    "body",
    [
        b'"8d9b7f0e-1111-4c4c-9d9d-0123456789ab"',
        b'{"value":"8d9b7f0e-1111-4c4c-9d9d-0123456789ab"}',
        b"8d9b7f0e-1111-4c4c-9d9d-0123456789ab\r\n",
        b'\xef\xbb\xbf"8d9b7f0e-1111-4c4c-9d9d-0123456789ab"',
    ],
)
def test_message_id_shapes(body: bytes) -> None:
    assert _message_id(body) == "8d9b7f0e-1111-4c4c-9d9d-0123456789ab"


def test_an_empty_enqueue_answer_is_an_error() -> None:
    with pytest.raises(ConnectorResponseError):
        _message_id(b'""')


@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("Processed", DataJobState.PROCESSED),
        (5, DataJobState.PROCESSED),
        ("5", DataJobState.PROCESSED),
        ("processed with errors", DataJobState.PROCESSED_WITH_ERRORS),
        ("PostProcessingError", DataJobState.POST_PROCESS_ERROR),
        (8, DataJobState.PRE_PROCESS_ERROR),
        ("InProcess", DataJobState.IN_PROCESS),
        ("Bogus", DataJobState.UNKNOWN),
        (None, DataJobState.UNKNOWN),
        (42, DataJobState.UNKNOWN),
    ],
)
def test_data_job_state_names_and_numbers(value: object, state: DataJobState) -> None:
    assert DataJobState.parse(value) is state


def test_job_status_flat_or_nested() -> None:
    nested = parse_job_status(
        {
            "DataJobStatus": {"DataJobState": 6, "ExecutionIdentifier": "E1"},
            "ExecutionDetail": [{"EntityName": "Customer groups", "TargetErrorCount": "2"}],
        }
    )
    assert (nested.state, nested.execution_id) == (DataJobState.PROCESSED_WITH_ERRORS, "E1")
    assert nested.details[0].target_error_count == 2
    flat = parse_job_status({"dataJobState": "Processed", "executionIdentifier": ""})
    assert (flat.state, flat.execution_id, flat.details) == (DataJobState.PROCESSED, None, [])
    with pytest.raises(ConnectorResponseError):
        parse_job_status(["not", "an", "object"])


def test_download_location_rewrites() -> None:
    base = "https://contoso.operations.dynamics.com"
    quirk = "http://contoso.operations.dynamics.com:80/api/connector/download/%7Bx%7D?correlation-id=c&blob=b"
    assert download_url(quirk, base) == (
        "https://contoso.operations.dynamics.com/api/connector/download/%7Bx%7D?correlation-id=c&blob=b"
    )
    assert download_url("http://127.0.0.1:8765/api/connector/download/x?blob=b", "http://127.0.0.1:8765") == (
        "http://127.0.0.1:8765/api/connector/download/x?blob=b"
    )
    # an internal host name on the download path still goes to the configured environment
    assert download_url("http://aos1.internal/api/connector/download/x", base).startswith(base + "/api/")
    with pytest.raises(ConnectorResponseError):
        download_url("http://evil.example.com/steal", base)
    assert https_download_url("http://host:80/p?q=1") == "https://host/p?q=1"
    assert https_download_url("http://host:8080/p") == "https://host:8080/p"
    assert https_download_url("http://localhost:8765/p") == "http://localhost:8765/p"
    assert https_download_url("http://[::1]:8765/p") == "http://[::1]:8765/p"


def test_dequeued_message_repr_hides_the_receipt() -> None:
    message = DequeuedMessage("c", "secret-receipt", "http://x", None, b"{}")
    assert "secret-receipt" not in repr(message)
