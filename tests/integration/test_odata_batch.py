"""$batch and bulk against the real emulator: changesets, atomic rollback, throttling storms, faults."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from shared.d365.batch import BatchOperation, BatchRequest, OperationResult
from shared.d365.errors import D365ConnectionError, D365NotFoundError
from shared.d365.odata import ODataClient
from shared.d365.odata_query import F
from shared.d365.transport import D365Transport
from tests.support.d365 import FAST_RETRIES, make_transport
from tests.support.stack import EmulatorInfo

CUSTOMERS = "CustomersV3"


@pytest.fixture
def transport(clean_emulator: EmulatorInfo) -> Iterator[D365Transport]:
    with make_transport(clean_emulator) as t:
        yield t


@pytest.fixture
def client(transport: D365Transport) -> ODataClient:
    return ODataClient(transport)


def customer(account: str, group: str = "10", **extra: Any) -> dict[str, Any]:
    return {"dataAreaId": "usmf", "CustomerAccount": account, "CustomerGroupId": group, **extra}


def key(account: str) -> dict[str, str]:
    return {"dataAreaId": "usmf", "CustomerAccount": account}


def creates(prefix: str, n: int, bad: frozenset[int] = frozenset()) -> Iterator[BatchOperation]:
    for i in range(n):
        yield BatchOperation.create(CUSTOMERS, customer(f"{prefix}{i:05d}", "ZZ" if i in bad else "10"))


def test_batch_with_reads_and_changesets(client: ODataClient) -> None:
    client.create(CUSTOMERS, customer("BATCH-UPD", OrganizationName="Before"))
    etag = client.get(CUSTOMERS, key("BATCH-UPD"))["@odata.etag"]
    batch = BatchRequest()
    read = batch.add(BatchOperation.get(CUSTOMERS, key("BATCH-UPD")))
    batch.add(BatchOperation.get(CUSTOMERS, params={"$top": "3", "$select": "CustomerAccount"}))
    batch.changeset(
        [
            BatchOperation.create(CUSTOMERS, customer("BATCH 1/a")),
            BatchOperation.create(CUSTOMERS, customer("BATCH 2#b", OrganizationName="O'Brien")),
            BatchOperation.update(CUSTOMERS, key("BATCH-UPD"), {"OrganizationName": "After"}, etag=etag),
        ]
    )
    assert not batch.read_only
    result = client.execute_batch(batch)
    assert result.ok, [r.error for r in result.failures]
    assert [r.status for r in result][:2] == [200, 200]
    assert result.for_operation(read).response is not None
    listed = result[1].response
    assert listed is not None
    assert len(listed.body["value"]) == 3
    assert result[2].status in (200, 201, 204)
    assert client.get(CUSTOMERS, key("BATCH 2#b"))["OrganizationName"] == "O'Brien"
    assert client.get(CUSTOMERS, key("BATCH-UPD"))["OrganizationName"] == "After"


def test_failed_changeset_rolls_back_atomically(client: ODataClient) -> None:
    batch = BatchRequest()
    batch.changeset(
        [
            BatchOperation.create(CUSTOMERS, customer("ATOM-OK")),
            BatchOperation.create(CUSTOMERS, customer("ATOM-BAD", group="ZZ")),
        ]
    )
    batch.changeset([BatchOperation.create(CUSTOMERS, customer("ATOM-OTHER"))])
    batch.add(BatchOperation.get(CUSTOMERS, key("ATOM-OTHER")))
    result = client.execute_batch(batch)
    good, bad, other, read = result
    assert not good.ok
    assert good.rolled_back
    assert not bad.ok
    assert not bad.rolled_back
    assert bad.status == good.status == 400
    assert bad.error is not None
    assert "'ZZ'" in bad.error[1]
    assert other.ok
    assert read.ok
    with pytest.raises(D365NotFoundError):
        client.get(CUSTOMERS, key("ATOM-OK"))
    assert client.get(CUSTOMERS, key("ATOM-OTHER"))["CustomerAccount"] == "ATOM-OTHER"


def test_content_id_reference_inside_a_changeset(client: ODataClient) -> None:
    batch = BatchRequest()
    batch.changeset(
        [
            BatchOperation("POST", "/data/CustomersV3", customer("REF-1"), content_id="new"),
            BatchOperation("PATCH", "$new", {"OrganizationName": "Patched via $new"}),
        ]
    )
    result = client.execute_batch(batch)
    assert result.ok, [r.error for r in result.failures]
    assert client.get(CUSTOMERS, key("REF-1"))["OrganizationName"] == "Patched via $new"


def test_read_only_batch_is_retried_after_a_dropped_connection(
    clean_emulator: EmulatorInfo, client: ODataClient
) -> None:
    clean_emulator.admin(
        "PUT",
        "faults",
        json={
            "rules": [{"path_prefix": "/data/$batch", "drop_rate": 1.0, "drop_mode": "mid_body", "count": 1}]
        },
    )
    batch = BatchRequest()
    batch.add(BatchOperation.get(CUSTOMERS, params={"$top": "1"}))
    assert batch.read_only
    assert client.execute_batch(batch).ok
    assert sum(clean_emulator.admin("GET", "faults")["injected"].values()) == 1


def test_write_batch_is_not_retried_blindly_and_bulk_reports_it(
    clean_emulator: EmulatorInfo, client: ODataClient
) -> None:
    rule = {"path_prefix": "/data/$batch", "drop_rate": 1.0, "drop_mode": "before_response", "count": 1}
    clean_emulator.admin("PUT", "faults", json={"rules": [rule]})
    taken = 0

    def ops() -> Iterator[BatchOperation]:
        nonlocal taken
        for op in creates("DROP-", 50):
            taken += 1
            yield op

    result = client.bulk(ops(), changeset_size=5, max_operations_per_batch=10)
    assert isinstance(result.aborted, D365ConnectionError)
    assert result.failed == 10
    assert result.succeeded == 0
    assert "outcome unknown" in result.failures[0].message
    assert taken <= 11, "the rest of the iterable is left unconsumed"
    # The fault fires once; a blind re-send would have gone through and succeeded.
    faults = clean_emulator.admin("GET", "faults")
    assert sum(faults["injected"].values()) == 1
    assert faults["rules"][0]["count"] == 0


def test_bulk_reports_genuine_failures_per_operation(client: ODataClient) -> None:
    bad = {7, 130}
    successes: list[OperationResult] = []
    result = client.bulk(
        creates("GEN-", 300, frozenset(bad)),
        changeset_size=10,
        max_operations_per_batch=100,
        on_success=successes.append,
    )
    assert (result.total, result.succeeded, result.failed, result.resent) == (300, 280, 20, 0)
    assert len(successes) == 280
    assert all(s.status == 201 for s in successes)
    culprits = [f for f in result.failures if not f.rolled_back]
    assert sorted(f.operation.body["CustomerAccount"] for f in culprits) == ["GEN-00007", "GEN-00130"]
    assert all("'ZZ'" in f.message and f.status == 400 for f in result.failures)
    assert client.count(CUSTOMERS, filter=F("CustomerAccount").startswith("GEN-")) == 280

    isolated = client.bulk(creates("ISO-", 40, frozenset({3})), atomic=False, max_operations_per_batch=25)
    assert (isolated.succeeded, isolated.failed) == (39, 1)
    assert client.count(CUSTOMERS, filter=F("CustomerAccount").startswith("ISO-")) == 39


@pytest.mark.parametrize("transport_retries_429", [True, False], ids=["transport-retries", "bulk-resends"])
def test_bulk_of_thousands_survives_a_429_storm(
    clean_emulator: EmulatorInfo, transport_retries_429: bool
) -> None:
    # Deterministic storm: the next 3 requests are refused with 429 + Retry-After (resource-based limit),
    # whatever the machine's speed (a rate limit alone may never trip when batches are slow).
    clean_emulator.admin("PUT", "limits", json={"resource": {"next_requests": 3, "retry_after_seconds": 1}})
    policy = FAST_RETRIES if transport_retries_429 else replace(FAST_RETRIES, max_throttle_attempts=0)
    n = 3000
    with make_transport(clean_emulator, policy=policy) as transport:
        client = ODataClient(transport)
        result = client.bulk(creates("STORM-", n), changeset_size=50, max_operations_per_batch=500)
        rejections = clean_emulator.admin("GET", "limits")["rejections"]
        clean_emulator.admin("DELETE", "limits")
        assert result.ok, result.failures[:3]
        assert (result.total, result.succeeded, result.failed) == (n, n, 0)
        assert client.count(CUSTOMERS, filter=F("CustomerAccount").startswith("STORM-")) == n
    assert sum(rejections.values()) > 0, "the storm must actually have throttled some batches"
    if transport_retries_429:
        assert transport.stats.snapshot()["retries"].get("throttled", 0) > 0
    else:
        assert result.resent > 0
