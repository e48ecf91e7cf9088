"""Storage primitives against real Azurite: once-only writes, ETag races, leases across threads, moves."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import BlobLeaseClient, BlobServiceClient

from shared.storage import BlobStore, LeaseUnavailableError, keep_lease
from tests.support.stack import AzuriteInfo


@pytest.fixture
def store(azurite: AzuriteInfo) -> Iterator[BlobStore]:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield BlobStore(service)
    service.close()


@pytest.fixture
def container() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def test_create_if_absent_lets_exactly_one_of_many_racers_win(store: BlobStore, container: str) -> None:
    wins: list[bool] = []

    def race(i: int) -> None:
        wins.append(store.create_if_absent(container, "once", f"writer {i}".encode()))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1
    assert len(wins) == 20


def test_update_json_loses_no_increment_under_contention(store: BlobStore, container: str) -> None:
    def bump(current: dict[str, int] | None) -> dict[str, int]:
        return {"n": (current or {"n": 0})["n"] + 1}

    threads = [
        threading.Thread(target=lambda: [store.update_json(container, "counter", bump) for _ in range(5)])
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    found = store.read_json(container, "counter")
    assert found is not None
    assert found.value == {"n": 30}


def test_write_json_with_a_stale_etag_is_refused(store: BlobStore, container: str) -> None:
    first = store.write_json(container, "doc", {"v": 1})
    store.write_json(container, "doc", {"v": 2}, etag=first)
    with pytest.raises(Exception, match=r"(?i)condition|modified"):
        store.write_json(container, "doc", {"v": 3}, etag=first)
    found = store.read_json(container, "doc")
    assert found is not None
    assert found.value == {"v": 2}


def test_lease_excludes_a_second_holder_and_is_renewed_and_released(store: BlobStore, container: str) -> None:
    with store.lease(container, "mutex", seconds=15, renew_every=0.2):
        with pytest.raises(LeaseUnavailableError), store.lease(container, "mutex", seconds=15):
            pass
        threading.Event().wait(0.5)  # a few renewals happen while held
    with store.lease(container, "mutex", seconds=15):
        pass  # released on exit: can be taken again at once


class FlakyLease:
    """A real Azurite lease whose first ``failures`` renewals fail with a connection error (the network
    between the app and storage fails, which Azurite cannot simulate)."""

    def __init__(self, lease: BlobLeaseClient, failures: int) -> None:
        self.lease, self.failures, self.renewed = lease, failures, 0

    def renew(self) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ServiceRequestError("Connection reset by peer")
        self.lease.renew()
        self.renewed += 1

    def release(self) -> None:
        self.lease.release()


def test_a_lease_keeps_being_renewed_after_a_passing_connection_error(
    store: BlobStore, container: str
) -> None:
    store.create_if_absent(container, "held", b"")
    flaky = FlakyLease(store.blob(container, "held").acquire_lease(lease_duration=15), failures=2)
    with keep_lease(flaky, f"{container}/held", 0.6):  # type: ignore[arg-type]
        threading.Event().wait(2.0)
        assert flaky.failures == 0
        assert flaky.renewed >= 1  # retried soon after the failures instead of giving up
        with pytest.raises(LeaseUnavailableError), store.lease(container, "held", seconds=15):
            pass
    with store.lease(container, "held", seconds=15):
        pass  # released on exit


def test_move_streams_and_is_safe_to_repeat(store: BlobStore, container: str) -> None:
    payload = b"x" * (9 * 1024 * 1024 + 17)
    store.create_if_absent(container, "in/file.bin", payload, metadata={"origin": "test"})
    store.move(container, "in/file.bin", container, "archive/file.bin")
    store.move(container, "in/file.bin", container, "archive/file.bin")  # repeated after a "crash": no error
    moved = store.blob(container, "archive/file.bin")
    assert moved.download_blob().readall() == payload
    assert moved.get_blob_properties().metadata == {"origin": "test"}
    assert not store.blob(container, "in/file.bin").exists()
