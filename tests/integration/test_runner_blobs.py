"""Blob triggers through the runner on real Azurite: bindings, receipts, two runners, poison, shutdown."""

from __future__ import annotations

import json

import pytest

from localstack.processes import AzuriteInfo
from tests.runner_apps.recorder import Recorder
from tests.runner_apps.support import blob_service, receipts, sample_runner, sample_settings, unique


def test_blob_trigger_passes_a_stream_with_name_length_metadata(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("on_inbound",))
    container = settings["INBOUND_CONTAINER"]
    with sample_runner(settings, recorder, host_id=unique("blob")) as runner:
        assert runner.started is not None
        assert runner.started.watched_containers == (container,)
        blob_service(azurite).get_blob_client(container, "2024/orders.json").upload_blob(
            b'{"n": 1}', metadata={"source": "test"}
        )
        assert recorder.wait_for(lambda r: len(r.of("inbound")) == 1)
    event = recorder.of("inbound")[0]
    assert event["name"] == f"{container}/2024/orders.json"
    assert (event["length"], event["content"], event["metadata"]) == (8, '{"n": 1}', {"source": "test"})
    assert event["uri"] == f"{azurite.blob_endpoint}/{container}/2024/orders.json"


def test_sdk_type_parameter_gets_a_blob_client_not_the_content(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("on_sdk_client",))
    container = settings["SDK_CONTAINER"]
    with sample_runner(settings, recorder, host_id=unique("sdk")) as runner:
        assert runner.started is not None
        blob_service(azurite).get_blob_client(container, "in/big.dat").upload_blob(b"HEAD" + b"x" * 4096)
        assert recorder.wait_for(lambda r: len(r.of("sdk_client")) == 1)
        assert not recorder.wait_for(lambda r: len(r.of("sdk_client")) > 1, timeout=0.8)
    assert recorder.of("sdk_client")[0] == {
        **recorder.of("sdk_client")[0],
        "type": "azure.storage.blob._blob_client.BlobClient",  # what the extension's converter returns
        "container": container,
        "blob": "in/big.dat",
        "size": 4100,
        "head": "HEAD",
    }


def test_suffix_pattern_bytes_parameter_and_event_grid_source(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("on_csv",))
    container = settings["CSV_CONTAINER"]
    with sample_runner(settings, recorder, host_id=unique("csv")) as runner:
        assert runner.started is not None
        assert runner.started.blobs[0].source == "EventGrid"
        service = blob_service(azurite)
        service.get_blob_client(container, "skip.txt").upload_blob(b"not csv")
        service.get_blob_client(container, "rows.csv").upload_blob(b"a,b\n1,2\n")
        assert recorder.wait_for(lambda r: len(r.of("csv")) == 1)
        assert not recorder.wait_for(lambda r: len(r.of("csv")) > 1, timeout=0.8)
    assert recorder.of("csv")[0] == {**recorder.of("csv")[0], "size": 8, "text": "a,b\n1,2\n"}


def test_receipts_survive_a_restart_and_a_new_version_is_processed(azurite: AzuriteInfo) -> None:
    host_id = unique("receipts")
    settings = sample_settings(azurite, enable=("on_inbound",))
    container = settings["INBOUND_CONTAINER"]
    service = blob_service(azurite)
    first = Recorder()
    with sample_runner(settings, first, host_id=host_id):
        for name in ("a.txt", "b.txt"):
            service.get_blob_client(container, name).upload_blob(name.encode())
        assert first.wait_for(lambda r: len(r.of("inbound")) == 2)
    assert [m["status"] for m in receipts(azurite, host_id, "on_inbound")] == ["complete", "complete"]
    second = Recorder()
    with sample_runner(settings, second, host_id=host_id):
        assert not second.wait_for(lambda r: len(r.of("inbound")) > 0, timeout=1.2)  # nothing reprocessed
        service.get_blob_client(container, "a.txt").upload_blob(b"a, version 2", overwrite=True)
        assert second.wait_for(lambda r: len(r.of("inbound")) == 1)
        assert not second.wait_for(lambda r: len(r.of("inbound")) > 1, timeout=0.8)
    assert second.of("inbound")[0]["content"] == "a, version 2"


def test_two_runners_process_each_blob_exactly_once(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    host_id = unique("pair")
    settings = sample_settings(azurite, enable=("on_inbound",))
    container = settings["INBOUND_CONTAINER"]
    service = blob_service(azurite)
    with (
        sample_runner(settings, recorder, host_id=host_id),
        sample_runner(settings, recorder, host_id=host_id),
    ):
        for index in range(16):
            service.get_blob_client(container, f"doc-{index:02}.txt").upload_blob(b"x")
        assert recorder.wait_for(lambda r: len(r.of("inbound")) >= 16)
        assert not recorder.wait_for(lambda r: len(r.of("inbound")) > 16, timeout=1.0)
    names = sorted(e["name"] for e in recorder.of("inbound"))
    assert names == [f"{container}/doc-{i:02}.txt" for i in range(16)]


def test_poison_after_five_failed_attempts(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    host_id = unique("poison")
    settings = sample_settings(azurite, enable=("on_poison",))
    container = settings["POISON_CONTAINER"]
    service = blob_service(azurite)
    with sample_runner(settings, recorder, host_id=host_id):
        service.get_blob_client(container, "bad.bin").upload_blob(b"bad")
        assert recorder.wait_for(lambda r: len(r.of("poison_attempt")) >= 5)
        assert not recorder.wait_for(lambda r: len(r.of("poison_attempt")) > 5, timeout=1.0)
    assert [e["retry"] for e in recorder.of("poison_attempt")] == [0, 1, 2, 3, 4]
    [receipt] = receipts(azurite, host_id, "on_poison")
    assert (receipt["status"], receipt["attempts"]) == ("poisoned", "5")
    hosts = service.get_container_client("azure-webjobs-hosts")
    [record_blob] = list(hosts.list_blobs(name_starts_with=f"blobtrigger-poison/{host_id}/on_poison/"))
    record = json.loads(hosts.download_blob(record_blob.name).readall())
    assert (record["ContainerName"], record["BlobName"], record["Attempts"]) == (container, "bad.bin", 5)
    assert "cannot handle" in record["LastError"]


def test_shutdown_waits_for_an_in_flight_invocation(
    azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_SLOW_SECONDS", "1.0")
    recorder = Recorder()
    host_id = unique("drain")
    settings = sample_settings(azurite, enable=("on_slow",))
    runner = sample_runner(settings, recorder, host_id=host_id)
    runner.start()
    blob_service(azurite).get_blob_client(settings["SLOW_CONTAINER"], "job.txt").upload_blob(b"x")
    assert recorder.wait_for(lambda r: len(r.of("slow_blob_started")) == 1)
    assert runner.stop(10) is True
    assert len(recorder.of("slow_blob_finished")) == 1
    assert [m["status"] for m in receipts(azurite, host_id, "on_slow")] == ["complete"]


def test_an_invocation_cut_by_shutdown_is_retried_later(
    azurite: AzuriteInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TEST_SLOW_SECONDS", "1.5")
    host_id = unique("cut")
    settings = sample_settings(azurite, enable=("on_slow",))
    first = Recorder()
    runner = sample_runner(settings, first, host_id=host_id)
    runner.start()
    blob_service(azurite).get_blob_client(settings["SLOW_CONTAINER"], "job.txt").upload_blob(b"x")
    assert first.wait_for(lambda r: len(r.of("slow_blob_started")) == 1)
    assert runner.stop(0.2) is False  # abandoned: nothing recorded, lease released
    [receipt] = receipts(azurite, host_id, "on_slow")
    assert (receipt["status"], receipt["attempts"]) == ("incomplete", "1")
    monkeypatch.setenv("RUNNER_TEST_SLOW_SECONDS", "0.1")
    second = Recorder()
    with sample_runner(settings, second, host_id=host_id):
        assert second.wait_for(lambda r: len(r.of("slow_blob_finished")) == 1)
    [receipt] = receipts(azurite, host_id, "on_slow")
    assert (receipt["status"], receipt["attempts"]) == ("complete", "2")
