"""Recurring export dequeue against the real emulator (connector + DMF) and real Azurite: every package
stored exactly once and acked only after it is stored, through crashes, failed acks, redeliveries,
dropped downloads, budgets, throttling and token expiry."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from typing import IO, Any

import pytest

from emulator.connector import CUSTOMERS_EXPORT_ID
from shared.context import AppContext
from shared.d365.connector import ConnectorClient, DequeuedMessage
from shared.pipelines.exports import ExportSettings, RunBudget, RunReport, dequeue_exports
from shared.pipelines.exports.layout import export_lock_name
from shared.settings import Settings
from tests.support.app_env import stack_env
from tests.support.d365 import faults, logged
from tests.support.stack import AzuriteInfo, EmulatorInfo


class SimulatedCrash(BaseException):
    """The process dies here (BaseException: no ``except Exception`` in the pipeline may swallow it)."""


@dataclass
class Stack:
    emulator: EmulatorInfo
    context: AppContext

    @property
    def settings(self) -> ExportSettings:
        return self.context.settings.section(ExportSettings)

    def run(self, *, budget: RunBudget | None = None, **kwargs: Any) -> RunReport:
        return dequeue_exports(self.context, self.settings.activities[0], budget=budget, **kwargs)

    def queue(self, count: int = 1) -> list[str]:
        path = f"connector/activities/{CUSTOMERS_EXPORT_ID}/export"
        return [str(self.emulator.admin("POST", path)["message_id"]) for _ in range(count)]

    def journal(self) -> dict[str, str]:
        answer = self.emulator.admin("GET", "connector/messages", params={"activity_id": CUSTOMERS_EXPORT_ID})
        return {m["message_id"]: m["status"] for m in answer["messages"]}

    def blobs(self, suffix: str = ".zip") -> list[str]:
        container = self.store_container()
        return sorted(b.name for b in container.list_blobs() if b.name.endswith(suffix))

    def store_container(self) -> Any:
        return self.context.store.container(self.settings.container)

    def read(self, name: str) -> bytes:
        return bytes(self.context.store.blob(self.settings.container, name).download_blob().readall())

    def json(self, name: str) -> Any:
        found = self.context.store.read_json(self.settings.container, name)
        assert found is not None, name
        return found.value

    def state(self, correlation_id: str) -> Any:
        name = f"exports/{CUSTOMERS_EXPORT_ID}/{correlation_id}.json"
        found = self.context.store.read_json(self.settings.state_container, name)
        assert found is not None
        return found.value

    def visibility(self, seconds: float) -> None:
        self.emulator.admin("PUT", "connector/settings", json={"visibility_timeout_seconds": seconds})


def make_stack(emulator: EmulatorInfo, azurite: AzuriteInfo, **activity: Any) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    env = stack_env(
        emulator,
        azurite,
        EXPORTS_CONTAINER=f"exports-{suffix}",
        EXPORTS_STATE_CONTAINER=f"state-{suffix}",
        EXPORT_ACTIVITIES=json.dumps([{"name": "customers", "activity_id": CUSTOMERS_EXPORT_ID, **activity}]),
        D365_RETRY_MAX_ATTEMPTS="3",
        D365_RETRY_BACKOFF_BASE_SECONDS="0.02",
        D365_RETRY_BACKOFF_MAX_SECONDS="0.1",
        D365_RETRY_MAX_SECONDS="20",
    )
    return Stack(emulator, AppContext.from_settings(Settings.from_env(env)))


@pytest.fixture
def stack(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Stack]:
    built = make_stack(clean_emulator, azurite)
    yield built
    built.context.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fault(path: str, status: int, **extra: Any) -> dict[str, Any]:
    """The next request to ``path`` (connector family) answers ``status``."""
    rule = {"family": "connector", "path_prefix": path, "error_rate": 1, "error_status": status, "count": 1}
    return {**rule, **extra}


def wait_visible(stack: Stack, correlation_id: str) -> None:
    """Until the emulator offers the un-acked message again (its visibility timeout passed)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        answer = stack.emulator.admin("GET", f"connector/messages/{correlation_id}")
        if datetime.fromisoformat(answer["visible_at"].replace("Z", "+00:00")) <= datetime.now(UTC):
            return
        time.sleep(0.05)
    raise AssertionError("the message never became visible again")


class CrashingConnector(ConnectorClient):
    """The real client, except that the process 'dies' at one step."""

    def __init__(self, stack: Stack, at: str) -> None:
        super().__init__(stack.context.transport)
        self.at = at

    def download_to(self, message: DequeuedMessage, sink: IO[bytes], *, chunk_size: int = 1 << 20) -> int:
        if self.at == "download":
            sink.write(b"PK\x03\x04 partial bytes of the package")
            raise SimulatedCrash
        return super().download_to(message, sink, chunk_size=chunk_size)

    def ack(self, activity_id: str, message: DequeuedMessage) -> None:
        if self.at == "ack":
            raise SimulatedCrash
        super().ack(activity_id, message)


# ------------------------------------------------------------------------------------------ tests


def test_an_empty_queue_stores_nothing(stack: Stack) -> None:
    report = stack.run()
    assert report.stopped_by == "queue_empty"
    assert report.items == []
    assert report.ok
    assert stack.blobs("") == []


def test_several_messages_are_stored_once_each_and_acked(stack: Stack) -> None:
    queued = stack.queue(3)
    report = stack.run()
    assert report.stopped_by == "queue_empty"
    assert sorted(i.id for i in report.items) == sorted(queued)
    assert [(i.action, i.acked) for i in report.items] == [("stored", True)] * 3
    assert stack.journal() == dict.fromkeys(queued, "Acked")
    today = datetime.now(UTC).strftime("%Y/%m/%d")
    assert stack.blobs() == sorted(f"customers/{today}/{cid}.zip" for cid in queued)
    for item in report.items:
        name = f"customers/{today}/{item.id}.zip"
        data = stack.read(name)
        assert zipfile.ZipFile(BytesIO(data)).testzip() is None
        properties = stack.context.store.blob(stack.settings.container, name).get_blob_properties()
        assert properties.metadata["sha256"] == sha256(data)
        assert properties.metadata["correlation_id"] == item.id
        status = stack.json(f"{name}.status.json")
        assert (status["outcome"], status["message"]) == ("succeeded", "stored and acknowledged")
        assert status["details"]["bytes"] == len(data) == item.bytes
        assert stack.state(item.id)["path"] == name
    again = stack.run()
    assert (again.stopped_by, again.items) == ("queue_empty", [])
    assert len(stack.blobs()) == 3


def test_crash_between_store_and_ack_then_the_next_run_acks_without_a_copy(stack: Stack) -> None:
    [cid] = stack.queue(1)
    stack.visibility(0.5)
    with pytest.raises(SimulatedCrash):
        stack.run(connector=CrashingConnector(stack, at="ack"))
    [package] = stack.blobs()  # stored before the crash...
    assert stack.journal() == {cid: "Dequeued"}  # ...but never acked
    wait_visible(stack, cid)
    report = stack.run()
    [item] = report.items
    assert (item.id, item.action, item.acked) == (cid, "already_stored", True)
    assert stack.blobs() == [package]
    assert stack.journal() == {cid: "Acked"}
    assert stack.state(cid)["deliveries"] == 2
    assert stack.json(f"{package}.status.json")["message"].endswith("(a redelivery: no second copy)")


def test_a_failed_ack_leaves_the_message_to_the_next_run(stack: Stack) -> None:
    [cid] = stack.queue(1)
    stack.visibility(0.5)
    faults(
        stack.emulator,
        {"family": "connector", "path_prefix": "/api/connector/ack", "error_rate": 1, "error_status": 500},
    )
    first = stack.run()
    [item] = first.items
    assert (item.action, item.acked) == ("stored", False)
    assert "ack failed: HTTP 500" in str(item.error)
    assert not first.ok
    assert "1 not acked" in first.summary()
    [package] = stack.blobs()
    status = stack.json(f"{package}.status.json")
    assert status["outcome"] == "in_progress"
    assert "next run acks it" in status["message"]
    assert len(logged(stack.emulator, f"/api/connector/ack/{CUSTOMERS_EXPORT_ID}")) == 3  # retried
    faults(stack.emulator)
    wait_visible(stack, cid)
    second = stack.run()
    assert [(i.action, i.acked) for i in second.items] == [("already_stored", True)]
    assert stack.blobs() == [package]
    assert stack.journal() == {cid: "Acked"}
    status = stack.json(f"{package}.status.json")
    assert status["outcome"] == "succeeded"
    assert [h["outcome"] for h in status["history"]] == ["in_progress"]


def test_a_crash_before_the_store_leaves_nothing_and_the_redelivery_keeps_its_first_name(
    stack: Stack,
) -> None:
    [cid] = stack.queue(1)
    stack.visibility(0.5)
    day_one = datetime(2026, 3, 10, 23, 59, tzinfo=UTC)
    with pytest.raises(SimulatedCrash):
        stack.run(connector=CrashingConnector(stack, at="download"), now=lambda: day_one)
    assert stack.blobs("") == []  # the partial download was never committed: nothing visible
    wait_visible(stack, cid)
    report = stack.run(now=lambda: datetime(2026, 3, 11, 0, 5, tzinfo=UTC))  # redelivered after midnight
    assert [(i.action, i.acked) for i in report.items] == [("stored", True)]
    assert stack.blobs() == [f"customers/2026/03/10/{cid}.zip"]  # the first sight's date
    data = stack.read(f"customers/2026/03/10/{cid}.zip")
    assert zipfile.ZipFile(BytesIO(data)).testzip() is None


def test_a_download_dropped_mid_stream_is_resumed_into_one_intact_package(stack: Stack) -> None:
    [cid] = stack.queue(1)
    faults(
        stack.emulator,
        {
            "family": "connector",
            "path_prefix": "/api/connector/download",
            "drop_rate": 1,
            "drop_mode": "mid_body",
            "count": 1,
        },
    )
    report = stack.run()
    assert [(i.action, i.acked) for i in report.items] == [("stored", True)]
    downloads = logged(stack.emulator, f"/api/connector/download/{{{CUSTOMERS_EXPORT_ID}}}")
    assert [bool(d["dropped"]) for d in downloads] == [True, False]
    [package] = stack.blobs()
    stored = stack.read(package)
    message = DequeuedMessage(cid, "", stack.emulator.base_url + _location(stack, cid), None, b"")
    direct = ConnectorClient(stack.context.transport).download(message, stream=False).content
    assert stored == direct
    assert zipfile.ZipFile(BytesIO(stored)).testzip() is None


def _location(stack: Stack, cid: str) -> str:
    blob = stack.emulator.admin("GET", f"connector/messages/{cid}")["blob_id"]
    return f"/api/connector/download/%7B{CUSTOMERS_EXPORT_ID}%7D?correlation-id={cid}&blob={blob}"


def test_a_run_stops_at_its_budget_and_the_next_run_continues(stack: Stack) -> None:
    queued = stack.queue(3)
    nothing = stack.run(budget=RunBudget(max_seconds=0))
    assert (nothing.stopped_by, nothing.items) == ("time_budget", [])
    assert set(stack.journal().values()) == {"Enqueued"}  # nothing dequeued: nothing waits 30 minutes
    first = stack.run(budget=RunBudget(max_seconds=60, max_messages=2))
    assert (first.stopped_by, len(first.items)) == ("message_budget", 2)
    one = stack.run(budget=RunBudget(max_seconds=60, max_bytes=1))
    assert (one.stopped_by, len(one.items)) == ("size_budget", 1)
    assert stack.journal() == dict.fromkeys(queued, "Acked")
    assert len(stack.blobs()) == 3


@pytest.fixture
def unpacking(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Stack]:
    built = make_stack(clean_emulator, azurite, unpack=True, manifest=True)
    yield built
    built.context.close()


def test_unpacking_writes_the_files_and_a_manifest_record(unpacking: Stack) -> None:
    stack = unpacking
    [cid] = stack.queue(1)
    [item] = stack.run().items
    assert (item.action, item.acked) == ("stored", True)
    [package] = stack.blobs()
    folder = package.removesuffix(".zip")
    record = stack.json(f"{folder}.manifest.json")
    assert (record["correlation_id"], record["rejected"]) == (cid, [])
    assert record["package_sha256"] == sha256(stack.read(package))
    entities = {e["entity"]: e for e in record["entities"]}
    assert entities["Customers V3"]["rows"] == stack.context.odata.count("CustomersV3")
    assert entities["Customer groups"]["rows"] == stack.context.odata.count("CustomerGroups")
    with zipfile.ZipFile(BytesIO(stack.read(package))) as archive:
        assert sorted(stack.blobs("")) == sorted(
            [package, f"{package}.status.json", f"{folder}.manifest.json"]
            + [f"{folder}/{name}" for name in archive.namelist()]
        )
        for name in archive.namelist():
            assert stack.read(f"{folder}/{name}") == archive.read(name)
    status = stack.json(f"{package}.status.json")
    assert status["details"]["manifest"] == f"{stack.settings.container}/{folder}.manifest.json"


def test_throttling_server_errors_and_an_expired_token_are_ridden_out(stack: Stack) -> None:
    queued = stack.queue(2)
    stack.context.tokens.get_token()  # cache a token, then invalidate every token the emulator issued
    stack.emulator.admin("POST", "tokens/rotate-key")
    faults(
        stack.emulator,
        fault("/api/connector/dequeue", 429, retry_after=1),
        fault("/api/connector/download", 503),
        fault("/api/connector/ack", 502),
    )
    report = stack.run()
    assert report.ok, report.summary()
    assert sorted(i.id for i in report.items) == sorted(queued)
    assert stack.journal() == dict.fromkeys(queued, "Acked")
    statuses = [
        r["status"]
        for r in stack.emulator.admin("GET", "requests", params={"family": "connector"})["requests"]
    ]
    assert {401, 429, 503, 502} <= set(statuses)
    assert stack.context.transport.stats.snapshot()["token_refreshes"] >= 1
    assert len(stack.blobs()) == 2


def test_a_second_instance_skips_an_activity_another_one_is_draining(stack: Stack) -> None:
    stack.queue(1)
    lock = export_lock_name(CUSTOMERS_EXPORT_ID)
    with stack.context.store.lease(stack.settings.state_container, lock, seconds=15):
        report = stack.run()
    assert (report.stopped_by, report.items, report.ok) == ("lease_held", [], True)
    assert set(stack.journal().values()) == {"Enqueued"}
    assert [i.action for i in stack.run().items] == ["stored"]


def test_a_refused_dequeue_stops_the_run_with_the_reason(stack: Stack) -> None:
    faults(stack.emulator, fault("/api/connector/dequeue", 403))
    report = stack.run()
    assert (report.stopped_by, report.ok) == ("error", False)
    assert report.errors[0].startswith("dequeue failed: HTTP 403")
