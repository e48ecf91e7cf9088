"""Service protection limits over real HTTP (ref §2): 429 + Retry-After + the exact D365 messages, the
window sliding open again, per-caller keys, and the families that are (not) subject to limits."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from emulator.throttling import MSG_RESOURCE
from tests.support.stack import EmulatorInfo


@pytest.fixture(autouse=True)
def leave_emulator_clean(emulator: EmulatorInfo) -> Iterator[None]:
    """The session emulator is shared with other modules: no fault, limit or app outlives a test here."""
    yield
    emulator.admin("POST", "reset")


WINDOW = 3


def token(emulator: EmulatorInfo, client_id: str | None = None) -> str:
    body = {"client_id": client_id} if client_id else {}
    return str(emulator.admin("POST", "tokens/issue", json=body)["access_token"])


def get(emulator: EmulatorInfo, bearer: str, path: str = "/data/", session: requests.Session | None = None):
    sender = session or requests
    return sender.get(f"{emulator.base_url}{path}", headers={"Authorization": f"Bearer {bearer}"}, timeout=30)


def assert_429(response: requests.Response, message: str) -> int:
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error"]["message"] == message
    assert body["error"]["innererror"]["message"] == message
    retry_after = int(response.headers["Retry-After"])
    assert retry_after >= 1
    return retry_after


def test_request_count_limit_and_the_window_sliding_open(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin(
        "PUT", "limits", json={"window_seconds": WINDOW, "requests": {"enabled": True, "limit": 5}}
    )
    bearer = token(emulator)
    session = requests.Session()
    started = time.monotonic()
    statuses = [get(emulator, bearer, session=session).status_code for _ in range(5)]
    assert 429 not in statuses
    throttled = get(emulator, bearer, session=session)
    retry_after = assert_429(
        throttled, f"Number of requests exceeded the limit of 5 over the time window of {WINDOW} seconds."
    )
    assert retry_after <= WINDOW
    assert math.ceil(started + WINDOW - time.monotonic()) >= retry_after - 1
    time.sleep(retry_after)
    assert get(emulator, bearer, session=session).status_code != 429
    log = emulator.admin("GET", "requests?status=429")["requests"]
    assert log
    assert log[-1]["throttled"] == "requests"
    assert emulator.admin("GET", "counters")["throttled"]["requests"] >= 1


def test_limits_are_per_caller(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin(
        "PUT", "limits", json={"window_seconds": WINDOW, "requests": {"enabled": True, "limit": 2}}
    )
    first, second = token(emulator), token(emulator, emulator.certificate_client_id)
    for _ in range(2):
        assert get(emulator, first).status_code != 429
    assert get(emulator, first).status_code == 429
    assert get(emulator, second).status_code != 429


def test_execution_time_limit(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin(
        "PUT",
        "limits",
        json={"window_seconds": WINDOW, "execution_time": {"enabled": True, "limit_seconds": 0.5}},
    )
    emulator.admin("POST", "faults", json={"family": "odata", "latency_ms": 300})  # slow server processing
    bearer = token(emulator)
    assert get(emulator, bearer).status_code != 429
    assert get(emulator, bearer).status_code != 429  # 0.6 s used
    assert_429(
        get(emulator, bearer),
        "Combined execution time of incoming requests exceeded the limit of 0.5 seconds over the time window "
        f"of {WINDOW} seconds. Decrease the number of concurrent requests or reduce the duration of requests "
        "and try again later.",
    )


def test_concurrency_limit(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin("PUT", "limits", json={"concurrency": {"enabled": True, "limit": 2}})
    emulator.admin("POST", "faults", json={"family": "odata", "latency_ms": 700})
    bearer = token(emulator)
    with ThreadPoolExecutor(max_workers=3) as pool:
        responses = list(pool.map(lambda _: get(emulator, bearer), range(3)))
    throttled = [r for r in responses if r.status_code == 429]
    assert len(throttled) == 1
    assert assert_429(throttled[0], "Number of concurrent requests exceeded the limit of 2.") == 1


def test_resource_based_next_requests_and_period(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    bearer = token(emulator)
    emulator.admin("PUT", "limits", json={"resource": {"next_requests": 2, "retry_after_seconds": 4}})
    assert assert_429(get(emulator, bearer), MSG_RESOURCE) == 4
    assert assert_429(get(emulator, bearer, "/api/services/x"), MSG_RESOURCE) == 4
    assert get(emulator, bearer).status_code != 429
    emulator.admin("PUT", "limits", json={"resource": {"for_seconds": 1.2}})
    retry_after = assert_429(get(emulator, bearer), MSG_RESOURCE)
    assert retry_after in (1, 2)
    time.sleep(1.3)
    assert get(emulator, bearer).status_code != 429


@pytest.mark.parametrize(
    "path", ["/api/connector/dequeue/abc", "/Metadata/DataEntities", "/_emulator/limits"]
)
def test_exempt_families_are_never_throttled(clean_emulator: EmulatorInfo, path: str) -> None:
    """Ref §2.5: limits apply to OData and custom services only (the recurring connector is exempt)."""
    emulator = clean_emulator
    bearer = token(emulator)
    emulator.admin("PUT", "limits", json={"resource": {"for_seconds": 30}})
    assert get(emulator, bearer).status_code == 429
    assert get(emulator, bearer, path).status_code != 429


def test_throughput_of_a_client_honouring_retry_after(clean_emulator: EmulatorInfo) -> None:
    """Loose end-to-end check (the exact one is the fake-clock unit test): 20 requests per 2 s window,
    4 workers sleeping Retry-After on 429, for 4 s, get at least 90% of what the window allows."""
    emulator = clean_emulator
    limit, window, duration = 20, 2, 4.0
    emulator.admin(
        "PUT", "limits", json={"window_seconds": window, "requests": {"enabled": True, "limit": limit}}
    )
    bearer = token(emulator)
    deadline = time.monotonic() + duration

    def worker(_: int) -> int:
        done = 0
        with requests.Session() as session:
            while time.monotonic() < deadline:
                response = get(emulator, bearer, session=session)
                if response.status_code == 429:
                    time.sleep(
                        min(int(response.headers["Retry-After"]), max(0.0, deadline - time.monotonic()))
                    )
                else:
                    done += 1
        return done

    with ThreadPoolExecutor(max_workers=4) as pool:
        admitted = sum(pool.map(worker, range(4)))
    allowed = limit * duration / window
    assert 0.9 * allowed <= admitted <= allowed + limit, admitted
