"""A dequeued export whose package never downloads is given up on after EXPORT_DOWNLOAD_MAX_ATTEMPTS, against
the real emulator (connector export admin API, fault injection) and real Azurite: the failures are counted
in storage across runs and instances, a failed status record says why, and the ack is a setting."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from emulator.connector import CUSTOMERS_EXPORT_ID
from shared.context import AppContext
from shared.pipelines.exports import ExportSettings, RunReport, dequeue_exports
from shared.pipelines.exports.give_up import DownloadFailure, count_failure
from shared.settings import Settings
from tests.support.app_env import stack_env
from tests.support.d365 import faults, logged
from tests.support.stack import AzuriteInfo, EmulatorInfo

DOWNLOAD_404 = {
    "family": "connector",
    "path_prefix": "/api/connector/download",
    "error_rate": 1,
    "error_status": 404,
}
DOWNLOADS = f"/api/connector/download/{{{CUSTOMERS_EXPORT_ID}}}"


class Stack:
    """One app instance's context on shared containers (``instance`` builds another one)."""

    def __init__(self, emulator: EmulatorInfo, env: dict[str, str]) -> None:
        self.emulator, self.env = emulator, env
        self.context = AppContext.from_settings(Settings.from_env(env))

    @property
    def settings(self) -> ExportSettings:
        return self.context.settings.section(ExportSettings)

    def run(self) -> RunReport:
        return dequeue_exports(self.context, self.settings.activities[0])

    def queue(self) -> str:
        path = f"connector/activities/{CUSTOMERS_EXPORT_ID}/export"
        return str(self.emulator.admin("POST", path)["message_id"])

    def journal(self) -> dict[str, str]:
        answer = self.emulator.admin("GET", "connector/messages", params={"activity_id": CUSTOMERS_EXPORT_ID})
        return {m["message_id"]: m["status"] for m in answer["messages"]}

    def state(self, cid: str) -> Any:
        found = self.context.store.read_json(
            self.settings.state_container, f"exports/{CUSTOMERS_EXPORT_ID}/{cid}.json"
        )
        assert found is not None
        return found.value

    def status(self, cid: str) -> Any:
        found = self.context.store.read_json(
            self.settings.container, f"{self.state(cid)['path']}.status.json"
        )
        assert found is not None
        return found.value

    def packages(self) -> list[str]:
        container = self.context.store.container(self.settings.container)
        return [b.name for b in container.list_blobs() if b.name.endswith(".zip")]

    def redelivered(self, cid: str) -> None:
        """Until the emulator offers the un-acked message again (a short visibility timeout)."""
        answer = self.emulator.admin("GET", f"connector/messages/{cid}")
        visible = datetime.fromisoformat(answer["visible_at"].replace("Z", "+00:00"))
        remaining = (visible - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            threading.Event().wait(remaining + 0.01)


def make_env(emulator: EmulatorInfo, azurite: AzuriteInfo, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    activities = [{"name": "customers", "activity_id": CUSTOMERS_EXPORT_ID}]
    settings = {
        "EXPORTS_CONTAINER": f"exports-{suffix}",
        "EXPORTS_STATE_CONTAINER": f"state-{suffix}",
        "EXPORT_ACTIVITIES": json.dumps(activities),
        "EXPORT_DOWNLOAD_MAX_ATTEMPTS": "3",
        "D365_RETRY_MAX_ATTEMPTS": "2",
        "D365_RETRY_BACKOFF_BASE_SECONDS": "0.02",
        "D365_RETRY_BACKOFF_MAX_SECONDS": "0.1",
        "D365_RETRY_MAX_SECONDS": "20",
    }
    return stack_env(emulator, azurite, **{**settings, **extra})


@pytest.fixture
def stacks(clean_emulator: EmulatorInfo, azurite: AzuriteInfo) -> Iterator[Any]:
    built: list[Stack] = []

    def make(**extra: str) -> tuple[Stack, Stack]:
        env = make_env(clean_emulator, azurite, **extra)
        pair = (Stack(clean_emulator, env), Stack(clean_emulator, env))  # two instances, one storage
        built.extend(pair)
        clean_emulator.admin("PUT", "connector/settings", json={"visibility_timeout_seconds": 0.3})
        return pair

    yield make
    for stack in built:
        stack.context.close()


def given_up_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("EXPORT_MESSAGE_GIVEN_UP:")]


def test_a_package_that_never_downloads_is_given_up_recorded_and_acked(
    stacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    one, two = stacks()
    cid = one.queue()
    faults(one.emulator, DOWNLOAD_404)
    caplog.set_level(logging.INFO)
    for attempt, stack in enumerate((one, two), start=1):  # runs on two instances share one count
        [item] = stack.run().items
        assert (item.action, item.acked) == ("failed", False)
        assert stack.state(cid)["download_failures"] == attempt
        status = stack.status(cid)
        assert status["outcome"] == "in_progress"
        assert f"(failed attempt {attempt} of 3)" in status["message"]
        assert status["d365"]["download_status"] == 404
        stack.redelivered(cid)
    assert given_up_lines(caplog) == []
    report = one.run()
    [item] = report.items
    assert (item.action, item.acked, item.outcome) == ("given_up", True, "failed")
    assert not report.ok
    assert one.journal() == {cid: "Acked"}  # D365 stops offering it
    state = one.state(cid)
    assert state["download_failures"] == 3
    assert state["given_up_at"] == state["given_up_acked_at"]
    status = one.status(cid)
    assert status["outcome"] == "failed"
    assert status["message"].startswith("given up: the package could not be downloaded in 3 attempt(s)")
    assert "Acknowledged so that D365 stops offering it" in status["message"]
    assert status["d365"]["download_status"] == 404
    assert status["d365"]["download_message"]
    assert status["d365"]["is_download_file_exist"] is True  # what the dequeue itself said
    assert f"correlation-id={cid}" in status["d365"]["download_location"]
    details = status["details"]
    assert details["download_failures"] == 3
    assert details["first_failure"] <= details["last_failure"]
    assert (details["acked"], details["first_seen"]) == (True, state["first_seen"])
    assert [h["outcome"] for h in status["history"]] == ["in_progress", "in_progress"]
    [line] = given_up_lines(caplog)
    assert "attempts=3" in line
    assert "acked=true" in line
    assert one.packages() == []
    assert len(logged(one.emulator, DOWNLOADS)) == 3 * 1  # 404 is not retried; one per offer
    one.redelivered(cid)
    assert one.run().items == []  # acked: never offered again


def test_without_the_ack_a_reoffer_is_quiet_and_a_package_that_becomes_readable_is_stored(
    stacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    one, _ = stacks(EXPORT_DOWNLOAD_MAX_ATTEMPTS="2", EXPORT_GIVE_UP_ACK="false")
    cid = one.queue()
    faults(one.emulator, DOWNLOAD_404)
    caplog.set_level(logging.INFO)
    one.run()
    one.redelivered(cid)
    [item] = one.run().items
    assert (item.action, item.acked, item.outcome) == ("given_up", None, "failed")
    assert one.journal() == {cid: "Dequeued"}  # left with D365
    status = one.status(cid)
    assert status["outcome"] == "failed"
    assert "Not acked (EXPORT_GIVE_UP_ACK=false)" in status["message"]
    assert "given_up_acked_at" not in one.state(cid)
    one.redelivered(cid)
    quiet = one.run()
    [item] = quiet.items
    assert (item.action, item.acked) == ("given_up", None)
    assert quiet.ok  # a known, recorded give-up is no new problem
    assert one.state(cid)["download_failures"] == 3  # it was tried once more
    assert one.status(cid) == status  # no second record, no growing history
    assert len(given_up_lines(caplog)) == 1
    faults(one.emulator)  # D365 serves the package again
    one.redelivered(cid)
    [item] = one.run().items
    assert (item.action, item.acked) == ("stored", True)
    assert one.journal() == {cid: "Acked"}
    assert one.status(cid)["outcome"] == "succeeded"
    assert len(one.packages()) == 1


def test_a_failed_ack_at_give_up_is_retried_on_the_next_offer_without_a_download(
    stacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    one, _ = stacks(EXPORT_DOWNLOAD_MAX_ATTEMPTS="1")
    cid = one.queue()
    ack_500 = {**DOWNLOAD_404, "path_prefix": "/api/connector/ack", "error_status": 500}
    faults(one.emulator, DOWNLOAD_404, ack_500)
    caplog.set_level(logging.INFO)
    [item] = one.run().items
    assert (item.action, item.acked) == ("given_up", False)
    assert "The ack failed (HTTP 500" in one.status(cid)["message"]
    assert one.journal() == {cid: "Dequeued"}
    faults(one.emulator, DOWNLOAD_404)
    one.redelivered(cid)
    [item] = one.run().items
    assert (item.action, item.acked) == ("given_up", True)
    assert one.journal() == {cid: "Acked"}
    assert len(logged(one.emulator, DOWNLOADS)) == 1  # the second offer was only acked
    status = one.status(cid)
    assert (status["outcome"], status["details"]["acked"]) == ("failed", True)
    assert "Acknowledged so that D365 stops offering it" in status["message"]
    assert len(given_up_lines(caplog)) == 1


def test_failures_counted_by_many_writers_at_once_are_all_counted(stacks: Any) -> None:
    one, _ = stacks()
    name = f"exports/{CUSTOMERS_EXPORT_ID}/{uuid.uuid4()}.json"
    container = one.settings.state_container
    failure = DownloadFailure("HTTP 404: gone", {"download_status": 404})
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(lambda n: count_failure(one.context.store, container, name, failure, f"t{n}"), range(8))
        )
    found = one.context.store.read_json(container, name)
    assert found is not None
    assert found.value["download_failures"] == 8
