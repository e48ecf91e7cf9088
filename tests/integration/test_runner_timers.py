"""Timer triggers through the runner on real Azurite: schedules, start-up runs, past due, singleton."""

from __future__ import annotations

import itertools
from typing import Any

import requests

from localstack.processes import AzuriteInfo
from tests.runner_apps.recorder import Recorder
from tests.runner_apps.support import blob_service, eventually, sample_runner, sample_settings, unique


def test_timer_runs_on_its_setting_schedule(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("tick",), TICK_SCHEDULE="*/1 * * * * *")
    with sample_runner(settings, recorder, host_id=unique("tick")) as runner:
        assert runner.started is not None
        assert [t.schedule for t in runner.started.timers] == ["*/1 * * * * *"]
        assert recorder.wait_for(lambda r: len(r.of("tick")) >= 3, timeout=8)
    ticks = recorder.of("tick")
    assert not any(t["past_due"] for t in ticks)
    assert ticks[0]["status"]["Last"] is None
    assert ticks[2]["status"]["Last"] is not None  # the previous run, from the schedule status blob
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(ticks)]
    assert all(0.3 < gap < 2.5 for gap in gaps)  # one a second, with room for a loaded machine


def test_run_on_startup_and_retry_policy(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("startup_tick", "flaky_tick"))
    with sample_runner(settings, recorder, host_id=unique("startup")):
        assert recorder.wait_for(lambda r: len(r.of("flaky_tick")) >= 3 and len(r.of("startup_tick")) >= 1)
    assert recorder.of("startup_tick")[0]["past_due"] is False
    assert [e["retry"] for e in recorder.of("flaky_tick")] == [0, 1, 2]


def test_a_missed_occurrence_runs_past_due_after_downtime(azurite: AzuriteInfo) -> None:
    host_id = unique("pastdue")
    settings = sample_settings(azurite, enable=("tick",), TICK_SCHEDULE="*/1 * * * * *")
    first = Recorder()
    with sample_runner(settings, first, host_id=host_id):
        assert first.wait_for(lambda r: len(r.of("tick")) >= 1)
    # down for longer than the interval: the next start finds Next in the past
    assert not first.wait_for(lambda r: False, timeout=1.5)
    second = Recorder()
    with sample_runner(settings, second, host_id=host_id):
        assert second.wait_for(lambda r: len(r.of("tick")) >= 2)
    ticks = second.of("tick")
    assert ticks[0]["past_due"] is True
    assert ticks[1]["past_due"] is False


def _intervals(recorder: Recorder) -> list[tuple[float, float]]:
    starts, ends = recorder.of("slow_tick_started"), recorder.of("slow_tick_finished")
    return [(s["at"], e["at"]) for s, e in zip(starts, ends, strict=False)]


def test_two_runners_never_run_the_same_timer_at_once(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    host_id = unique("singleton")
    # every second, each run takes 1.2 s: overlapping runs would show if the lock did not hold
    settings = sample_settings(azurite, enable=("slow_tick",), SLOW_TICK_SCHEDULE="*/1 * * * * *")
    with (
        sample_runner(settings, recorder, host_id=host_id) as one,
        sample_runner(settings, recorder, host_id=host_id) as two,
    ):
        assert recorder.wait_for(lambda r: len(r.of("slow_tick_finished")) >= 2, timeout=10)
        leaders = [one.leading_timers(), two.leading_timers()]
        assert sorted(leaders) == [[], ["slow_tick"]]
    spans = sorted(_intervals(recorder))
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start >= end
    assert len(recorder.of("slow_tick_started")) == len(recorder.of("slow_tick_finished"))


def test_a_standby_runner_takes_over_when_the_leader_stops(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    host_id = unique("takeover")
    settings = sample_settings(azurite, enable=("tick",), TICK_SCHEDULE="*/1 * * * * *")
    one = sample_runner(settings, recorder, host_id=host_id)
    two = sample_runner(settings, recorder, host_id=host_id)
    one.start()
    two.start()
    try:
        assert eventually(lambda: "tick" in one.leading_timers() + two.leading_timers())
        leader, standby = (one, two) if one.leading_timers() else (two, one)
        assert recorder.wait_for(lambda r: len(r.of("tick")) >= 1)
        assert leader.stop(5)
        before = len(recorder.of("tick"))
        assert eventually(lambda: standby.leading_timers() == ["tick"], timeout=5)
        assert recorder.wait_for(lambda r: len(r.of("tick")) >= before + 2, timeout=5)
    finally:
        one.stop(5)
        two.stop(5)
    occurrences = [_occurrence(t) for t in recorder.of("tick")]
    assert len(occurrences) == len(set(occurrences))  # no occurrence ran twice


def _occurrence(tick: dict[str, Any]) -> Any:
    return (tick["status"].get("Last"), tick["past_due"])


def test_the_admin_api_runs_a_timer_or_blob_function_now(azurite: AzuriteInfo) -> None:
    recorder = Recorder()
    settings = sample_settings(azurite, enable=("tick", "on_inbound"), TICK_SCHEDULE="0 0 0 1 1 *")
    container = settings["INBOUND_CONTAINER"]
    blob_service(azurite).create_container(container)
    blob_service(azurite).get_blob_client(container, "manual.txt").upload_blob(b"by hand")
    with sample_runner(settings, recorder, host_id=unique("admin"), blob_poll_interval=60) as runner:
        assert runner.started is not None
        base, master = runner.started.base_url, runner.started.master_key
        denied = requests.post(f"{base}/admin/functions/tick", json={}, timeout=10)
        assert denied.status_code == 401
        headers = {"x-functions-key": master}
        assert (
            requests.post(f"{base}/admin/functions/tick", json={}, headers=headers, timeout=10).status_code
            == 202
        )
        blob_input = {"input": f"{container}/manual.txt"}
        answer = requests.post(
            f"{base}/admin/functions/on_inbound", json=blob_input, headers=headers, timeout=10
        )
        assert answer.status_code == 202
        unknown = requests.post(f"{base}/admin/functions/nope", json={}, headers=headers, timeout=10)
        assert unknown.status_code == 404
        assert recorder.wait_for(lambda r: len(r.of("tick")) == 1 and len(r.of("inbound")) >= 1)
    assert recorder.of("inbound")[0]["content"] == "by hand"
