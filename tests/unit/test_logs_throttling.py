"""D365_THROTTLED from the transport (real loopback server, injected clock): when a call waited often enough
for throttling — on its own 429s or on the shared throttle gate — or gave up while throttled; and
D365_THROTTLING_SUSTAINED when the transport's 429s across calls fill its sliding window."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from shared.d365.errors import D365ServerError, D365ThrottledError
from shared.d365.retry import RetryPolicy
from shared.d365.throttle_window import ThrottleWindow
from shared.d365.transport import THROTTLE_EVENT_AFTER, D365Transport
from shared.logs import EVENT_ATTRIBUTE, log_context
from tests.support.scripted_server import Reply, ScriptedServer
from tests.unit.test_transport import FakeClock, Tokens

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05, jitter="none", max_attempts=2)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def transport(server: ScriptedServer, clock: FakeClock, policy: RetryPolicy = FAST) -> D365Transport:
    return D365Transport(server.url, Tokens(), policy=policy, sleep=clock.sleep, clock=clock)


def events(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == "D365_THROTTLED"]


def test_a_few_429s_are_not_an_event(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server.add(*[Reply(429, {"Retry-After": "1"})] * (THROTTLE_EVENT_AFTER - 1), Reply(200))
    assert transport(server, FakeClock()).request("GET", "/data/A").status_code == 200
    assert events(caplog) == []


def test_repeated_429s_are_a_warning_with_the_callers_ids(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.add(*[Reply(429, {"Retry-After": "2"})] * THROTTLE_EVENT_AFTER, Reply(200))
    with log_context(file="inbound/a.csv"):
        assert transport(server, FakeClock()).request("GET", "/data/CustomersV3?$top=1").status_code == 200
    [event] = events(caplog)
    assert event.levelno == logging.WARNING
    assert event.getMessage().startswith(
        f"D365_THROTTLED: GET waited {THROTTLE_EVENT_AFTER} time(s), {2 * THROTTLE_EVENT_AFTER:.1f}s in all"
    )
    assert f"throttled={THROTTLE_EVENT_AFTER} waits={THROTTLE_EVENT_AFTER}" in event.getMessage()
    assert " path=/data/CustomersV3 " in event.getMessage()  # no query: it may hold customer data
    request_id = event.app_request_id  # type: ignore[attr-defined]
    assert event.getMessage().endswith(f"outcome=succeeded request_id={request_id} file=inbound/a.csv")


def test_waits_on_the_shared_gate_count_too(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server.add(Reply(429, {"Retry-After": "5"}), Reply(200))  # call A closes the gate
    server.add(Reply(429, {"Retry-After": "5"}), Reply(429, {"Retry-After": "5"}), Reply(200))  # call B
    clock = FakeClock()
    client = transport(server, clock)
    client._sleep = lambda seconds: None  # frozen time: the gate A closed is still closed when B starts
    client.request("GET", "/data/A")
    client.request("GET", "/data/B")
    [event] = events(caplog)
    assert "waits=3" in event.getMessage()
    assert "throttled=2" in event.getMessage()  # one of B's waits was the gate A closed
    assert "path=/data/B" in event.getMessage()


def test_giving_up_while_throttled_is_an_error_at_once(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    server.add(Reply(429, {"Retry-After": "600"}))
    policy = RetryPolicy(backoff_base=0.01, backoff_max=0.05, total_timeout=30)
    with pytest.raises(D365ThrottledError):
        transport(server, FakeClock(), policy).request("POST", "/data/A", json={})
    [event] = events(caplog)
    assert event.levelno == logging.ERROR
    assert "gave up: D365ThrottledError" in event.getMessage()
    assert "throttled=1 waits=0" in event.getMessage()
    assert "outcome=failed" in event.getMessage()


def test_other_failures_are_not_throttling(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    server.add(Reply(503), Reply(503))
    with pytest.raises(D365ServerError):
        transport(server, FakeClock()).request("GET", "/data/A")
    assert events(caplog) == []


# -- throttling spread over many calls: D365_THROTTLING_SUSTAINED (per transport, sliding window)


def sustained(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, EVENT_ATTRIBUTE, None) == "D365_THROTTLING_SUSTAINED"]


def test_one_or_two_429s_per_call_add_up_to_a_sustained_throttling_event(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    client = D365Transport(
        server.url, Tokens(), policy=FAST, sleep=clock.sleep, clock=clock, throttle_alert_count=5
    )
    for index in range(12):  # 18 429s over 12 calls, none of them throttled THROTTLE_EVENT_AFTER times
        server.add(*[Reply(429, {"Retry-After": "10"})] * (1 + index % 2), Reply(200))
        with log_context(file=f"inbound/{index}.csv"):
            assert client.request("GET", f"/data/E{index}?$top=1").status_code == 200
    assert events(caplog) == []
    [event] = sustained(caplog)  # 18 in 300 s of waiting: the first 5 make it, the window then stays quiet
    assert event.levelno == logging.WARNING
    message = event.getMessage()
    assert message.startswith("D365_THROTTLING_SUSTAINED: 5 answers 429 from D365 within 5 minutes on this ")
    host = server.url.split("://", 1)[1].rstrip("/")
    assert f"| throttled=5 window_minutes=5 host={host} method=GET path=/data/E3 request_id=" in message
    assert message.endswith("file=inbound/3.csv")  # the call that completed it: a hint, not the cause


def test_the_next_window_logs_again_while_throttling_lasts(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    client = D365Transport(
        server.url, Tokens(), policy=FAST, sleep=clock.sleep, clock=clock,
        throttle_alert_count=3, throttle_alert_seconds=60,
    )  # fmt: skip
    for _ in range(9):  # one 429 every 25 s (the Retry-After the fake clock sleeps): 225 s in all
        server.add(Reply(429, {"Retry-After": "25"}), Reply(200))
        client.request("GET", "/data/A")
    # 429s at 0, 25, 50 (event, quiet until 110), 75, 100, 125 (event, quiet until 185), 150, 175, 200 (event)
    assert len(sustained(caplog)) == 3


def test_429s_spread_thinner_than_the_window_are_no_event(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    client = D365Transport(
        server.url, Tokens(), policy=FAST, sleep=clock.sleep, clock=clock,
        throttle_alert_count=3, throttle_alert_seconds=60,
    )  # fmt: skip
    for _ in range(6):
        server.add(Reply(429, {"Retry-After": "31"}), Reply(200))  # 3 429s always span 62 s > 60 s
        client.request("GET", "/data/A")
    assert sustained(caplog) == []


def test_sas_blob_calls_do_not_count(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    clock = FakeClock()
    client = D365Transport(
        server.url, None, policy=FAST, sleep=clock.sleep, clock=clock, throttle_alert_count=2
    )
    for _ in range(3):  # blob storage answering 429 is not D365's service protection
        server.add(Reply(429, {"Retry-After": "1"}), Reply(200))
        client.request("PUT", server.url + "/c/b?sig=x", data=b"", authenticate=False)
    assert sustained(caplog) == []


def test_the_window_is_one_event_per_window_across_threads() -> None:
    window = ThrottleWindow(count=50, seconds=60)
    results: list[bool] = []
    lock = threading.Lock()

    def record() -> None:
        for _ in range(100):
            fired = window.record(1000.0)
            with lock:
                results.append(fired)

    threads = [threading.Thread(target=record) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert (len(results), results.count(True)) == (800, 1)
    assert window.record(1059.0) is False  # still in the quiet window
    assert window.record(1060.0) is True  # the last 50 are within 60 s: a new window, a new event


def test_a_window_needs_a_count_and_a_length() -> None:
    with pytest.raises(ValueError):
        ThrottleWindow(count=0)
    with pytest.raises(ValueError):
        ThrottleWindow(seconds=0)
