"""The emulator's ``/data/$batch`` over real HTTP (ref §1.6): multipart/mixed with atomic changesets."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from localstack.processes import EmulatorInfo
from shared.d365.batch import BatchOperation, BatchRequest
from tests.support.d365_http import D365Http, d365_http


@pytest.fixture
def api(clean_emulator: EmulatorInfo) -> Iterator[D365Http]:
    """A fresh token per test, taken after the reset: other modules may rotate keys or inject faults."""
    client = d365_http(clean_emulator)
    yield client
    client.session.close()


# --- a deliberately plain multipart writer and reader, independent of the emulator's code ----------------


@dataclass
class Op:
    method: str
    url: str
    body: dict[str, Any] | None = None
    content_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> str:
        lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
        if self.content_id:
            lines.append(f"Content-ID: {self.content_id}")
        lines += ["", f"{self.method} {self.url} HTTP/1.1", "OData-Version: 4.0", "Accept: application/json"]
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        if self.body is not None:
            lines += ["Content-Type: application/json;odata.metadata=minimal", "", json.dumps(self.body)]
        else:
            lines += ["", ""]
        return "\r\n".join(lines)


def encode_batch(items: list[Op | list[Op]]) -> tuple[bytes, str]:
    boundary = f"batch_{uuid.uuid4()}"
    out: list[str] = []
    for item in items:
        out.append(f"--{boundary}")
        if isinstance(item, list):
            cs = f"changeset_{uuid.uuid4()}"
            out.append(f"Content-Type: multipart/mixed; boundary={cs}\r\n")
            for op in item:
                out += [f"--{cs}", op.encode()]
            out.append(f"--{cs}--")
        else:
            out.append(item.encode())
    out.append(f"--{boundary}--\r\n")
    return "\r\n".join(out).encode(), f"multipart/mixed; boundary={boundary}"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    content_id: str | None

    def json(self) -> Any:
        return json.loads(self.body)


def _parts(body: bytes, boundary: str) -> list[bytes]:
    chunks = re.split(rb"\r\n--" + re.escape(boundary.encode()) + rb"(?:--)?(?:\r\n|$)", b"\r\n" + body)
    return [c for c in chunks[1:] if c.strip()]


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode().split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


def decode_batch(response: requests.Response) -> list[Answer | list[Answer]]:
    boundary = response.headers["Content-Type"].split("boundary=")[1]
    items: list[Answer | list[Answer]] = []
    for part in _parts(response.content, boundary):
        head, _, rest = part.partition(b"\r\n\r\n")
        headers = _headers(head)
        if headers["content-type"].startswith("multipart/mixed"):
            inner = headers["content-type"].split("boundary=")[1]
            items.append([_answer(p) for p in _parts(rest, inner)])
        else:
            items.append(_answer(part))
    return items


def _answer(part: bytes) -> Answer:
    head, _, http = part.partition(b"\r\n\r\n")
    part_headers = _headers(head)
    status_head, _, body = http.partition(b"\r\n\r\n")
    status_line, *header_lines = status_head.decode().split("\r\n")
    assert status_line.startswith("HTTP/1.1 ")
    headers = _headers("\r\n".join(header_lines).encode())
    return Answer(int(status_line.split()[1]), headers, body.rstrip(b"\r\n"), part_headers.get("content-id"))


def send(api: D365Http, items: list[Op | list[Op]]) -> requests.Response:
    body, content_type = encode_batch(items)
    return api.post("$batch", data=body, headers={"Content-Type": content_type})


def customer(account: str, **extra: Any) -> dict[str, Any]:
    return {
        "CustomerAccount": account,
        "OrganizationName": f"Batch {account}",
        "CustomerGroupId": "10",
        **extra,
    }


def key(account: str, company: str = "usmf") -> str:
    return f"CustomersV3(dataAreaId='{company}',CustomerAccount='{account}')"


# --- tests --------------------------------------------------------------------------------------------------


def test_mixed_batch_with_changeset_and_content_id_references(api: D365Http) -> None:
    response = send(
        api,
        [
            Op("GET", "CustomerGroups?$select=CustomerGroupId"),
            [
                Op("POST", f"{api.root}/CustomersV3", customer("B-001"), content_id="1"),
                Op("POST", "/data/CustomersV3", customer("B-002"), content_id="2"),
                Op("PATCH", "$1", {"OrganizationName": "Patched through $1"}, content_id="3"),
                Op("DELETE", "$2", content_id="4"),
            ],
            Op("GET", key("B-001")),
        ],
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/mixed; boundary=")
    first, changeset, last = decode_batch(response)
    assert isinstance(first, Answer)
    assert first.status == 200
    assert len(first.json()["value"]) == 6
    assert isinstance(changeset, list)
    assert [(a.content_id, a.status) for a in changeset] == [("1", 201), ("2", 201), ("3", 204), ("4", 204)]
    assert changeset[0].json()["CustomerAccount"] == "B-001"
    assert changeset[0].headers["location"] == f"{api.root}/{key('B-001')}"
    assert isinstance(last, Answer)
    assert last.status == 200  # a standalone operation after the changeset sees its committed work
    assert last.json()["OrganizationName"] == "Patched through $1"
    assert api.get(key("B-001")).json()["OrganizationName"] == "Patched through $1"
    assert api.get(key("B-002")).status_code == 404


def test_changeset_is_atomic(api: D365Http) -> None:
    response = send(
        api,
        [
            [
                Op("POST", "CustomersV3", customer("B-010"), content_id="1"),
                Op("PATCH", key("US-002"), {"OrganizationName": "Should roll back"}, content_id="2"),
                Op("POST", "CustomersV3", customer("US-001"), content_id="3"),  # duplicate key: fails
                Op("POST", "CustomersV3", customer("B-011"), content_id="4"),
            ],
            Op("GET", key("B-010")),
        ],
    )
    assert response.status_code == 200
    failed, after = decode_batch(response)
    # OData 4.0: a failed changeset is answered by the single failing response
    assert isinstance(failed, Answer)
    assert failed.status == 400
    assert failed.content_id == "3"
    assert "The record already exists." in failed.json()["error"]["innererror"]["message"]
    assert isinstance(after, Answer)
    assert after.status == 404
    assert api.get(key("B-010")).status_code == 404
    assert api.get(key("B-011")).status_code == 404
    assert api.get(key("US-002")).json()["OrganizationName"] != "Should roll back"


def test_operations_outside_changesets_are_independent(api: D365Http) -> None:
    response = send(
        api,
        [
            Op("POST", "CustomersV3", customer("B-020")),
            Op("POST", "CustomersV3", customer("B-020")),  # duplicate: fails alone
            Op("PATCH", key("B-020"), {"CreditLimit": 42}),
            Op("GET", "NoSuchSet"),
            [Op("POST", "CustomersV3", customer("B-021"), content_id="a")],
            Op("GET", f"{key('B-020')}/CreditLimit"),
        ],
    )
    answers = decode_batch(response)
    statuses = [[a.status for a in item] if isinstance(item, list) else item.status for item in answers]
    assert statuses == [201, 400, 204, 404, [201], 200]
    last = answers[-1]
    assert isinstance(last, Answer)
    assert last.json()["value"] == 42
    assert api.get(key("B-021")).status_code == 200


def test_action_and_reads_inside_a_batch(api: D365Http) -> None:
    response = send(
        api,
        [
            [
                Op(
                    "POST",
                    "SalesOrderHeadersV2(dataAreaId='usmf',SalesOrderNumber='000010')/"
                    "Microsoft.Dynamics.DataEntities.Confirm",
                    {},
                    content_id="1",
                )
            ],
            Op("GET", "CustomersV3/$count"),
            Op("GET", "CustomersV3?$top=2&$count=true", headers={"Prefer": "odata.maxpagesize=1"}),
        ],
    )
    changeset, count, page = decode_batch(response)
    assert isinstance(changeset, list)
    assert changeset[0].status == 200
    assert changeset[0].json()["value"] == "USMF-CONF-000010"
    assert isinstance(count, Answer)
    assert count.body == b"\xef\xbb\xbf20"
    assert isinstance(page, Answer)
    assert len(page.json()["value"]) == 1
    assert page.json()["@odata.nextLink"].startswith(f"{api.root}/CustomersV3?")


def test_batch_limits_and_refusals(api: D365Http) -> None:
    too_many = send(api, [Op("GET", "CustomerGroups?$top=1")] * 5001)
    assert too_many.status_code == 400
    assert "5000" in too_many.json()["error"]["innererror"]["message"]
    get_in_changeset = send(api, [[Op("GET", "CustomersV3")]])
    assert get_in_changeset.status_code == 400
    assert "change set" in get_in_changeset.json()["error"]["innererror"]["message"]
    json_batch = api.post("$batch", json={"requests": [{"id": "1", "method": "GET", "url": "CustomersV3"}]})
    assert json_batch.status_code == 400  # OData 4.01 JSON batch: UNCONFIRMED for D365, refused
    unclosed = api.post(
        "$batch",
        data=b"--b\r\nContent-Type: application/http\r\n\r\nGET CustomersV3 HTTP/1.1\r\n",
        headers={"Content-Type": "multipart/mixed; boundary=b"},
    )
    assert unclosed.status_code == 400
    bad_reference = send(api, [[Op("PATCH", "$9", {"OrganizationName": "x"}, content_id="1")]])
    (answer,) = decode_batch(bad_reference)
    assert isinstance(answer, Answer)
    assert answer.status == 400


def test_the_projects_batch_client_round_trips(api: D365Http) -> None:
    """The app's own $batch encoder/parser (shared/d365/batch.py) against the emulator."""
    batch = BatchRequest()
    batch.changeset(
        [
            BatchOperation.create("CustomersV3", customer("B-030")),
            BatchOperation.update(
                "CustomersV3", {"dataAreaId": "usmf", "CustomerAccount": "US-003"}, {"CreditLimit": 1234}
            ),
        ]
    )
    batch.add(BatchOperation.get("CustomersV3", {"dataAreaId": "usmf", "CustomerAccount": "B-030"}))
    body, content_type = batch.encode(api.base_url)
    response = api.post("$batch", data=body, headers={"Content-Type": content_type})
    assert response.status_code == 200
    result = batch.parse_response(response.headers["Content-Type"], response.content)
    statuses = [r.status for r in result.results]
    assert statuses == [201, 204, 200]
    assert api.get(key("US-003")).json()["CreditLimit"] == 1234
