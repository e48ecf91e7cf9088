"""Multipart $batch (ref §1.6): request serialisation, answer parsing and matching, and the bulk planner."""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.d365.batch import BatchOperation, BatchRequest, BatchResult, match_responses
from shared.d365.bulk import BulkPlanner
from shared.d365.errors import ODataQueryError
from shared.d365.multipart import BatchResponse, parse_multipart, split_multipart

BASE = "https://contoso.operations.dynamics.com"
KEY = {"dataAreaId": "usmf", "CustomerAccount": "US-001"}


def sample_batch() -> BatchRequest:
    batch = BatchRequest()
    batch.add(BatchOperation.get("CustomersV3", KEY, params={"$select": "Name"}))
    batch.changeset(
        [
            BatchOperation.create(
                "CustomersV3", {"dataAreaId": "usmf", "CustomerAccount": "US-900", "Name": "Zoë"}
            ),
            BatchOperation.update("CustomersV3", KEY, {"CreditLimit": 5}, etag='W/"JzEsNjg3MTk0NzY3MzYn"'),
        ]
    )
    batch.changeset(
        [BatchOperation.delete("CustomersV3", {"dataAreaId": "usmf", "CustomerAccount": "A B/#"})]
    )
    return batch


# ---------------------------------------------------------------------------------------------- requests


def test_serialisation_golden_structure() -> None:
    body, content_type = sample_batch().encode(BASE, boundary="batch_fixed")
    assert content_type == "multipart/mixed; boundary=batch_fixed"
    assert re.search(rb"(?<!\r)\n", body) is None, "every line ends with CRLF"
    text = body.decode("utf-8")
    changesets = re.findall(r"boundary=(changeset_[0-9a-f-]{36})", text)
    assert len(changesets) == 2
    cs = changesets[0]
    expected_changeset = (
        f"--batch_fixed\r\n"
        f"Content-Type: multipart/mixed; boundary={cs}\r\n"
        f"\r\n"
        f"--{cs}\r\n"
        f"Content-Type: application/http\r\n"
        f"Content-Transfer-Encoding: binary\r\n"
        f"Content-ID: 2\r\n"
        f"\r\n"
        f"POST {BASE}/data/CustomersV3 HTTP/1.1\r\n"
        f"OData-Version: 4.0\r\n"
        f"OData-MaxVersion: 4.0\r\n"
        f"Accept: application/json\r\n"
        f"Content-Type: application/json;odata.metadata=minimal;charset=UTF-8\r\n"
        f"Prefer: return=representation\r\n"
        f"\r\n"
        '{"dataAreaId":"usmf","CustomerAccount":"US-900","Name":"Zoë"}\r\n'
        f"--{cs}\r\n"
    )
    assert expected_changeset in text
    assert text.startswith(
        "--batch_fixed\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        f"GET {BASE}/data/CustomersV3(dataAreaId='usmf',CustomerAccount='US-001')?$select=Name HTTP/1.1\r\n"
    )
    assert 'If-Match: W/"JzEsNjg3MTk0NzY3MzYn"\r\n' in text
    assert f"DELETE {BASE}/data/CustomersV3(dataAreaId='usmf',CustomerAccount='A%20B%2F%23') HTTP/1.1" in text
    assert text.endswith(f"--{changesets[1]}--\r\n--batch_fixed--\r\n")


def test_serialisation_parses_back_with_our_splitter() -> None:
    body, content_type = sample_batch().encode(BASE)
    parts = split_multipart(content_type, body)
    assert [p.parts is None for p in parts] == [True, False, False]
    get = parts[0]
    assert get.headers["content-type"] == "application/http"
    assert get.content.startswith(b"GET ")
    assert get.content.endswith(b"\r\n\r\n")
    create, update = parts[1].parts or []
    assert (create.headers["content-id"], update.headers["content-id"]) == ("2", "3")
    head, _, payload = create.content.partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == f"POST {BASE}/data/CustomersV3 HTTP/1.1".encode()
    assert json.loads(payload)["Name"] == "Zoë"
    assert update.content.split(b"\r\n")[0].startswith(b"PATCH ")


def test_serialisation_is_valid_mime_for_the_email_package() -> None:
    body, content_type = sample_batch().encode(BASE)
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    assert message.is_multipart()
    top: Any = message.get_payload()
    assert isinstance(top, list)
    assert len(top) == 3
    assert top[0].get_content_type() == "application/http"
    assert top[1].get_content_type() == "multipart/mixed"
    assert top[1].is_multipart()
    inner: Any = top[1].get_payload()
    assert [p["Content-ID"] for p in inner] == ["2", "3"]
    request: Any = inner[0].get_payload(decode=True)
    assert request.split(b"\r\n")[0] == f"POST {BASE}/data/CustomersV3 HTTP/1.1".encode()
    assert json.loads(request.split(b"\r\n\r\n", 1)[1]) == {
        "dataAreaId": "usmf",
        "CustomerAccount": "US-900",
        "Name": "Zoë",
    }


def test_builder_rules() -> None:
    batch = BatchRequest()
    op = batch.add(BatchOperation.get("CustomersV3"))
    assert batch.read_only
    assert len(batch) == 1
    with pytest.raises(ODataQueryError, match="added twice"):
        batch.add(op)
    batch.changeset([BatchOperation("POST", "CustomersV3", {"a": 1}, content_id="new")])
    assert not batch.read_only
    with pytest.raises(ODataQueryError, match="Content-ID 'new'"):
        batch.changeset([BatchOperation("POST", "CustomersV3", {}, content_id="new")])
    with pytest.raises(ODataQueryError, match="only hold writes"):
        batch.changeset([BatchOperation.get("CustomersV3")])
    batch.changeset()
    with pytest.raises(ODataQueryError, match="at least one operation"):
        batch.encode(BASE)
    with pytest.raises(ODataQueryError, match="empty batch"):
        BatchRequest().encode(BASE)
    with pytest.raises(ODataQueryError, match="entity key"):
        BatchOperation.update("CustomersV3", None, {})


def test_relative_and_reference_urls() -> None:
    batch = BatchRequest()
    batch.changeset(
        [
            BatchOperation("POST", "SalesOrderHeadersV2", {"x": 1}, content_id="h"),
            BatchOperation("POST", "$h/SalesOrderLines", {"y": 2}),
        ]
    )
    body, _ = batch.encode(BASE + "/")
    assert f"POST {BASE}/data/SalesOrderHeadersV2 HTTP/1.1".encode() in body
    assert b"POST $h/SalesOrderLines HTTP/1.1" in body


def test_action_operation() -> None:
    op = BatchOperation.action(
        "DataManagementDefinitionGroups", "GetExecutionSummaryStatus", parameters={"executionId": "x"}
    )
    assert (
        op.url
        == "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetExecutionSummaryStatus"
    )
    assert op.body == {"executionId": "x"}


# ---------------------------------------------------------------------------------------------- answers


def http(status: str, *, headers: str = "", body: str = "", cid: str | None = None, nl: str = "\r\n") -> str:
    part = f"Content-Type: application/http{nl}Content-Transfer-Encoding: binary{nl}"
    if cid:
        part += f"Content-ID: {cid}{nl}"
    inner = f"HTTP/1.1 {status}{nl}" + "".join(f"{h}{nl}" for h in headers.splitlines() if h)
    return part + nl + inner + nl + body


def multipart(boundary: str, parts: list[str], nl: str = "\r\n") -> str:
    return "".join(f"--{boundary}{nl}{p}{nl}" for p in parts) + f"--{boundary}--{nl}"


def changeset(boundary: str, parts: list[str], nl: str = "\r\n") -> str:
    return f"Content-Type: multipart/mixed; boundary={boundary}{nl}{nl}" + multipart(boundary, parts, nl)


JSON = "Content-Type: application/json; odata.metadata=minimal; charset=utf-8"
ERROR_400 = json.dumps(
    {
        "error": {
            "code": "",
            "message": "An error has occurred.",
            "innererror": {
                "message": "Write failed for table row of type 'CustCustomerV3Entity'. "
                "Customer group 'ZZ' does not exist.",
                "type": "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException",
            },
        }
    }
)


def test_parse_success_with_content_ids_out_of_order() -> None:
    batch = sample_batch()
    body = multipart(
        "batchresponse_1",
        [
            http("200 OK", headers=JSON, body='{"@odata.etag":"W/\\"x\\"","Name":"Contoso"}'),
            changeset(
                "changesetresponse_2",
                [
                    http("204 No Content", headers='ETag: W/"new"', cid="3"),
                    http("201 Created", headers=JSON, body='{"CustomerAccount":"US-900"}', cid="2"),
                ],
            ),
            changeset("changesetresponse_3", [http("204 No Content", cid="4")]),
        ],
    )
    result = batch.parse_response("multipart/mixed; boundary=batchresponse_1", body.encode())
    assert result.ok
    assert len(result) == 4
    get, create, update, delete = result
    assert get.response is not None
    assert get.response.body["Name"] == "Contoso"
    assert create.status == 201
    assert create.response is not None
    assert create.response.body == {"CustomerAccount": "US-900"}
    assert update.status == 204
    assert update.response is not None
    assert update.response.etag == 'W/"new"'
    assert delete.status == 204
    assert delete.error is None
    assert result.by_content_id("2") is create
    assert result.for_operation(batch.operations[0]) is get


def test_parse_lf_only_and_quoted_boundary_and_missing_content_ids() -> None:
    batch = sample_batch()
    nl = "\n"
    body = "preamble to ignore\n" + multipart(
        "b-1",
        [
            http("200 OK", headers=JSON, body='{"Name":"A"}', nl=nl),
            changeset("c-1", [http("201 Created", body="", nl=nl), http("204 No Content", nl=nl)], nl),
            changeset("c-2", [http("204 No Content", nl=nl)], nl),
        ],
        nl,
    )
    result = batch.parse_response('multipart/mixed; boundary="b-1"', body.encode())
    assert [r.status for r in result] == [200, 201, 204, 204]
    assert result.ok
    assert result[0].response is not None
    assert result[0].response.body == {"Name": "A"}


def test_failed_changeset_answered_with_one_error_response() -> None:
    batch = sample_batch()
    body = multipart(
        "batchresponse_x",
        [
            http("200 OK", headers=JSON, body="{}"),
            http("400 Bad Request", headers=JSON, body=ERROR_400),  # OData 4.0: the changeset's only answer
            changeset("cs", [http("204 No Content", cid="4")]),
        ],
    )
    result = batch.parse_response("multipart/mixed; boundary=batchresponse_x", body.encode())
    assert [r.ok for r in result] == [True, False, False, True]
    create, update = result[1], result[2]
    for item in (create, update):
        assert item.changeset_failed
        assert item.status == 400
        assert not item.retryable
        assert item.error is not None
        assert "Customer group 'ZZ' does not exist" in item.error[1]
    assert create.error is not None
    assert create.error[1].startswith("Customer group") is False
    assert len(result.failures) == 2


def test_failed_changeset_with_per_operation_answers_marks_the_innocent_as_rolled_back() -> None:
    batch = sample_batch()
    body = multipart(
        "b",
        [
            http("200 OK", headers=JSON, body="{}"),
            changeset(
                "cs",
                [
                    http("201 Created", body="{}", cid="2"),
                    http("412 Precondition Failed", headers=JSON, body=ERROR_400, cid="3"),
                ],
            ),
            changeset("cs2", [http("204 No Content", cid="4")]),
        ],
    )
    result = batch.parse_response("multipart/mixed; boundary=b", body.encode())
    create, update = result[1], result[2]
    assert not create.ok
    assert create.rolled_back
    assert create.status == 412
    assert create.error is not None
    assert create.error[1].startswith("rolled back because its changeset failed")
    assert not update.ok
    assert not update.rolled_back
    assert update.status == 412


def test_throttling_inside_the_batch() -> None:
    batch = sample_batch()
    body = multipart(
        "b",
        [
            http("429 Too Many Requests", headers="Retry-After: 7", body=""),
            http(
                "429 Too Many Requests",
                headers="Retry-After: 3\n" + JSON,
                body='{"error":{"message":"busy"}}',
            ),
            changeset("cs2", [http("204 No Content", cid="4")]),
        ],
    )
    result = batch.parse_response("multipart/mixed; boundary=b", body.encode())
    get, create, update, delete = result
    assert get.throttled
    assert get.retryable
    assert get.retry_after == 7
    assert create.throttled
    assert update.throttled
    assert create.retry_after == 3
    assert create.changeset_failed
    assert create.retryable
    assert delete.ok


def test_changeset_with_429_and_a_real_error_is_not_retryable() -> None:
    batch = sample_batch()
    body = multipart(
        "b",
        [
            http("200 OK", body="{}"),
            changeset(
                "cs",
                [
                    http("429 Too Many Requests", headers="Retry-After: 1", cid="2"),
                    http("400 Bad Request", body=ERROR_400, cid="3"),
                ],
            ),
        ],
    )
    result = batch.parse_response("multipart/mixed; boundary=b", body.encode())
    assert not result[1].retryable
    assert not result[2].retryable
    assert result[3].not_sent
    assert result[3].retryable
    assert result[3].error is not None


def test_answer_that_is_not_multipart() -> None:
    with pytest.raises(ValueError, match="not a multipart"):
        sample_batch().parse_response("application/json", b'{"error":{}}')


def test_parse_multipart_shapes() -> None:
    body = multipart(
        "b", [http("200 OK", body="plain text"), changeset("c", [http("201 Created", body="[1,2]")])]
    )
    parts = parse_multipart("multipart/mixed; boundary=b", body.encode())
    assert isinstance(parts[0], BatchResponse)
    assert parts[0].body == "plain text"
    assert isinstance(parts[1], list)
    assert parts[1][0].body == [1, 2]


# ---------------------------------------------------------------------------------------------- bulk planner


def creates(n: int, counter: list[int] | None = None) -> Iterator[BatchOperation]:
    for i in range(n):
        if counter is not None:
            counter[0] += 1
        yield BatchOperation.create("CustomersV3", {"CustomerAccount": f"C{i:05d}"})


Server = Callable[[BatchRequest, BatchOperation, str], BatchResponse]


def fake_answer(batch: BatchRequest, answer: Server) -> BatchResult:
    """Answer each changeset like an OData 4.0 server: all members, or one error for a failed changeset."""
    parts: list[BatchResponse | list[BatchResponse]] = []
    for item in batch.items:
        assert not isinstance(item, BatchOperation)
        responses = [answer(batch, op, batch.content_ids[id(op)]) for op in item.operations]
        errors = [r for r in responses if not r.ok]
        parts.append(errors[:1] if errors else responses)
    return match_responses(batch, parts)


def run(planner: BulkPlanner, answer: Server) -> list[float]:
    waits = []
    while (batch := planner.next_batch()) is not None:
        planner.record(batch, fake_answer(batch, answer))
        waits.append(planner.wait)
    return waits


def test_bulk_splits_lazily_into_bounded_batches() -> None:
    consumed = [0]
    planner = BulkPlanner(creates(2500, consumed), changeset_size=100, max_operations_per_batch=1000)
    first = planner.next_batch()
    assert first is not None
    assert len(first) == 1000
    assert len(first.items) == 10
    assert consumed[0] <= 1001, "only what fits in one batch is taken from the iterable"
    planner.record(first, fake_answer(first, lambda b, op, cid: BatchResponse(201, content_id=cid)))
    sizes = [1000]
    while (batch := planner.next_batch()) is not None:
        sizes.append(len(batch))
        planner.record(batch, fake_answer(batch, lambda b, op, cid: BatchResponse(201, content_id=cid)))
    assert sizes == [1000, 1000, 500]
    result = planner.result
    assert (result.total, result.succeeded, result.failed, result.batches) == (2500, 2500, 0, 3)


def test_bulk_changeset_that_does_not_fill_a_batch_is_carried_over() -> None:
    planner = BulkPlanner(creates(10), changeset_size=4, max_operations_per_batch=6)
    sizes = []
    while (batch := planner.next_batch()) is not None:
        sizes.append([len(cs) for cs in batch.items])  # type: ignore[arg-type]
        planner.record(batch, fake_answer(batch, lambda b, op, cid: BatchResponse(201, content_id=cid)))
    assert sizes == [[4], [4, 2]]


def test_bulk_resends_throttled_changesets_after_retry_after() -> None:
    seen: dict[int, int] = {}

    def answer(batch: BatchRequest, op: BatchOperation, cid: str) -> BatchResponse:
        seen[id(op)] = seen.get(id(op), 0) + 1
        if seen[id(op)] <= 2 and int(cid) % 3 == 0:
            return BatchResponse(429, headers={"retry-after": "2"}, content_id=cid)
        return BatchResponse(201, content_id=cid)

    planner = BulkPlanner(creates(300), changeset_size=10, max_operations_per_batch=100)
    waits = run(planner, answer)
    result = planner.result
    assert result.ok
    assert result.succeeded == 300
    assert result.failed == 0
    assert result.resent > 0
    assert 2.0 in waits
    assert max(seen.values()) == 3


def test_bulk_reports_genuine_failures_with_rollback_and_does_not_retry() -> None:
    def answer(batch: BatchRequest, op: BatchOperation, cid: str) -> BatchResponse:
        if op.body["CustomerAccount"] == "C00005":
            return BatchResponse(400, headers={}, body=json.loads(ERROR_400), content_id=cid)
        return BatchResponse(201, content_id=cid)

    planner = BulkPlanner(creates(20), changeset_size=5, max_operations_per_batch=20)
    run(planner, answer)
    result = planner.result
    assert (result.succeeded, result.failed, result.resent) == (15, 5, 0)
    messages = {f.operation.body["CustomerAccount"]: f for f in result.failures}
    assert set(messages) == {f"C{i:05d}" for i in range(5, 10)}
    assert all(f.status == 400 and "Customer group 'ZZ'" in f.message for f in result.failures)


def test_bulk_non_atomic_isolates_each_operation() -> None:
    def answer(batch: BatchRequest, op: BatchOperation, cid: str) -> BatchResponse:
        bad = op.body["CustomerAccount"] == "C00005"
        return BatchResponse(400 if bad else 201, body=json.loads(ERROR_400) if bad else None, content_id=cid)

    planner = BulkPlanner(creates(20), changeset_size=5, max_operations_per_batch=20, atomic=False)
    run(planner, answer)
    assert (planner.result.succeeded, planner.result.failed) == (19, 1)
    assert not planner.result.failures[0].rolled_back


def test_bulk_whole_batch_throttle_and_abort() -> None:
    planner = BulkPlanner(creates(30), changeset_size=10, max_operations_per_batch=20)
    batch = planner.next_batch()
    assert batch is not None
    planner.throttled(batch, 4.0)
    assert planner.wait == 4.0
    assert planner.result.resent == 20
    again = planner.next_batch()
    assert again is not None
    assert [op.body for op in again.operations] == [op.body for op in batch.operations]
    planner.abort(again, RuntimeError("connection dropped"))
    result = planner.result
    assert result.aborted is not None
    assert result.failed == 20
    assert not result.ok
    assert "outcome unknown" in result.failures[0].message


def test_bulk_abort_reports_every_taken_operation() -> None:
    planner = BulkPlanner(creates(100), changeset_size=4, max_operations_per_batch=6)
    first = planner.next_batch()
    assert first is not None
    planner.throttled(first, 0.0)
    second = planner.next_batch()  # the re-sent changeset, with the next one carried over
    assert second is not None
    planner.abort(second, RuntimeError("reset"))
    result = planner.result
    assert result.total == result.failed == 8
    assert planner.next_batch() is None
    assert sum("not sent" in f.message for f in result.failures) == 4


def test_bulk_gives_up_after_the_resend_budget() -> None:
    planner = BulkPlanner(creates(3), changeset_size=3, max_operations_per_batch=3, max_resends=2)
    run(planner, lambda b, op, cid: BatchResponse(429, headers={"retry-after": "0"}, content_id=cid))
    assert planner.result.failed == 3
    assert planner.result.failures[0].status == 429


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_operations_per_batch": 5001}, "max_operations_per_batch"),
        ({"max_operations_per_batch": 0}, "max_operations_per_batch"),
        ({"changeset_size": 2000, "max_operations_per_batch": 1000}, "changeset_size"),
    ],
)
def test_bulk_limits(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BulkPlanner([], **kwargs)
