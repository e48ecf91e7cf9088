"""Exports of the emulator's recurring-integrations API (ref §4.2): packages built from entity data, dequeue
(204 when empty), the authenticated download, ack with the pop receipt, redelivery after the visibility
timeout, exports triggered by data changes, a connection dropped mid-download, the http:// quirk.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from emulator.connector import CUSTOMERS_EXPORT_ID, PACKAGE_IMPORT_ID
from shared.d365.transport import D365Transport
from tests.support.d365 import bearer_token, connector_at_test_pace, faults, logged, make_transport
from tests.support.stack import EmulatorInfo

ACTIONS = "data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities"
DEQUEUE = f"api/connector/dequeue/{CUSTOMERS_EXPORT_ID}"
ACK = f"api/connector/ack/{CUSTOMERS_EXPORT_ID}"


@pytest.fixture
def connector(clean_emulator: EmulatorInfo) -> EmulatorInfo:
    return connector_at_test_pace(clean_emulator)


@pytest.fixture(scope="module")
def d365(emulator: EmulatorInfo) -> Iterator[D365Transport]:
    transport = make_transport(emulator)
    yield transport
    transport.close()


def export_now(emulator: EmulatorInfo) -> dict[str, Any]:
    message: dict[str, Any] = emulator.admin("POST", f"connector/activities/{CUSTOMERS_EXPORT_ID}/export")
    return message


def dequeue(d365: D365Transport) -> dict[str, Any] | None:
    response = d365.request("GET", DEQUEUE)
    if response.status_code == 204:
        assert response.content == b""
        return None
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def package_text(content: bytes) -> dict[str, str]:
    """Every member of a package zip as text (UTF-16 with BOM or UTF-8)."""
    texts = {}
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        for name in package.namelist():
            raw = package.read(name)
            texts[name] = raw[2:].decode("utf-16-le") if raw[:2] == b"\xff\xfe" else raw.decode("utf-8-sig")
    return texts


def test_dequeue_of_an_empty_queue_is_204(connector: EmulatorInfo, d365: D365Transport) -> None:
    assert dequeue(d365) is None
    # an import job has nothing to hand out either
    assert d365.request("GET", f"api/connector/dequeue/{PACKAGE_IMPORT_ID}").status_code == 204


def test_export_dequeue_download_ack(connector: EmulatorInfo, d365: D365Transport) -> None:
    queued = export_now(connector)
    assert queued["status"] == "Enqueued"

    message = dequeue(d365)
    assert message is not None
    assert set(message) == {
        "CorrelationId", "PopReceipt", "DownloadLocation", "IsDownLoadFileExist",
        "FileDownLoadErrorMessage", "LastDequeueDateTime",
    }  # fmt: skip
    assert message["CorrelationId"] == queued["message_id"]
    assert message["LastDequeueDateTime"] is None  # first dequeue
    assert message["IsDownLoadFileExist"] is True
    assert message["FileDownLoadErrorMessage"] == ""
    location = urlsplit(message["DownloadLocation"])
    assert location.scheme == "http"  # as D365 answers behind its load balancer (ref §4.2)
    assert location.path == f"/api/connector/download/%7B{CUSTOMERS_EXPORT_ID}%7D"
    assert f"correlation-id={message['CorrelationId']}" in location.query
    assert "blob=" in location.query
    assert dequeue(d365) is None  # invisible until acked or timed out

    # the download needs the bearer token
    anonymous = requests.get(message["DownloadLocation"], timeout=30)
    assert anonymous.status_code == 401
    download = d365.request("GET", message["DownloadLocation"])
    assert download.headers["content-type"] == "application/zip"
    files = package_text(download.content)
    assert {"Manifest.xml", "PackageHeader.xml"} <= set(files)
    data = "\n".join(text for name, text in files.items() if not name.endswith(".xml"))
    assert "US-001" in data  # a seeded customer account
    status = d365.request("GET", f"api/connector/jobstatus/{CUSTOMERS_EXPORT_ID}",
                          params={"jobId": message["CorrelationId"]}).json()  # fmt: skip
    assert status["DataJobStatus"]["DataJobState"] == "Downloaded"

    assert d365.request("POST", ACK, json=message).status_code == 200  # the dequeue body verbatim
    answer = d365.request("POST", f"{ACTIONS}.GetMessageStatus", json={"messageId": message["CorrelationId"]})
    assert answer.json()["value"] == "Acked"
    # acking again (a retry whose answer was lost) is harmless; RIS's three-field form is accepted
    short = {k: message[k] for k in ("CorrelationId", "PopReceipt", "DownloadLocation")}
    assert d365.request("POST", ACK, json=short).status_code == 200
    assert dequeue(d365) is None


def test_redelivery_after_the_visibility_timeout(connector: EmulatorInfo, d365: D365Transport) -> None:
    connector.admin("PUT", "connector/settings", json={"visibility_timeout_seconds": 0.5})
    export_now(connector)
    first = dequeue(d365)
    assert first is not None
    assert dequeue(d365) is None
    time.sleep(0.6)
    second = dequeue(d365)
    assert second is not None
    assert second["CorrelationId"] == first["CorrelationId"]
    assert second["PopReceipt"] != first["PopReceipt"]
    assert second["LastDequeueDateTime"] is not None  # the first dequeue's time

    stale = d365.request("POST", ACK, json=first, ok_statuses=(400,))
    assert stale.status_code == 400
    assert "PopReceipt" in stale.json()["error"]["message"]
    assert d365.request("POST", ACK, json=second).status_code == 200
    time.sleep(0.6)
    assert dequeue(d365) is None  # acked: never redelivered
    wrong = d365.request("POST", ACK, json={"CorrelationId": "nope", "PopReceipt": "x"}, ok_statuses=(400,))
    assert wrong.status_code == 400
    assert d365.request("POST", ACK, data=b"not json", ok_statuses=(400,)).status_code == 400


def test_export_when_data_changes(connector: EmulatorInfo, d365: D365Transport) -> None:
    connector.admin("PATCH", f"connector/activities/{CUSTOMERS_EXPORT_ID}", json={"export_on_change": True})
    d365.request(
        "POST",
        "data/CustomersV3",
        json={"CustomerAccount": "RI-CHANGE-1", "OrganizationName": "Changed Ltd", "CustomerGroupId": "30"},
    )
    deadline = time.monotonic() + 20
    message = dequeue(d365)
    while message is None and time.monotonic() < deadline:
        time.sleep(0.05)
        message = dequeue(d365)
    assert message is not None, "no export was queued after the change"
    files = package_text(d365.request("GET", message["DownloadLocation"]).content)
    assert any("RI-CHANGE-1" in text for text in files.values())
    time.sleep(0.3)
    assert dequeue(d365) is None  # one change, one package

    # a change in another company does not concern this job (it exports usmf)
    d365.request(
        "POST",
        "data/CustomersV3",
        json={"dataAreaId": "usrt", "CustomerAccount": "RI-CHANGE-2", "CustomerGroupId": "30"},
    )
    time.sleep(0.4)
    assert dequeue(d365) is None


def test_download_survives_a_connection_dropped_mid_body(
    connector: EmulatorInfo, d365: D365Transport
) -> None:
    export_now(connector)
    message = dequeue(d365)
    assert message is not None
    path = f"/api/connector/download/{{{CUSTOMERS_EXPORT_ID}}}"  # the log keeps the decoded path
    faults(connector, {"family": "connector", "path_prefix": "/api/connector/download", "drop_rate": 1,
                       "drop_mode": "mid_body", "count": 1})  # fmt: skip
    try:
        response = d365.request("GET", message["DownloadLocation"])  # the transport retries the read
    finally:
        faults(connector)
    assert {"Manifest.xml", "PackageHeader.xml"} <= set(package_text(response.content))
    attempts = logged(connector, path)
    assert [a["dropped"] for a in attempts] == ["mid_body", None]


def test_download_refusals(connector: EmulatorInfo, d365: D365Transport) -> None:
    export_now(connector)
    message = dequeue(d365)
    assert message is not None
    wrong_blob = (
        message["DownloadLocation"].rsplit("blob=", 1)[0] + "blob=00000000-0000-0000-0000-000000000001"
    )
    assert d365.request("GET", wrong_blob, ok_statuses=(404,)).status_code == 404


def test_download_location_uses_http_with_the_callers_host(
    connector: EmulatorInfo, d365: D365Transport
) -> None:
    """Over the HTTPS port, DownloadLocation still says http:// (the load-balancer quirk, ref §4.2): the
    URL works only once the client puts its environment's scheme back."""
    export_now(connector)
    tls = urlsplit(connector.tls_url)
    token = bearer_token(connector)
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    ca = connector.ca_file
    answer = session.get(f"{connector.tls_url}/{DEQUEUE}", timeout=30, verify=ca)
    assert answer.status_code == 200
    location = answer.json()["DownloadLocation"]
    assert location.startswith(f"http://{tls.netloc}/api/connector/download/")
    with pytest.raises(requests.ConnectionError):
        session.get(location, timeout=10)  # plain HTTP to the TLS port
    fixed = session.get("https://" + location.removeprefix("http://"), timeout=30, verify=ca)
    assert fixed.status_code == 200
    assert fixed.content[:2] == b"PK"

    connector.admin("PUT", "connector/settings", json={"download_base_url": "http://d365.invalid:80"})
    export_now(connector)
    again = dequeue(d365)
    assert again is not None
    assert again["DownloadLocation"].startswith("http://d365.invalid:80/api/connector/download/")
