"""D365_THROTTLED from the transport (real loopback server, injected clock): when a call waited often enough
for throttling — on its own 429s or on the shared throttle gate — or gave up while throttled."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from shared.d365.errors import D365ServerError, D365ThrottledError
from shared.d365.retry import RetryPolicy
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
