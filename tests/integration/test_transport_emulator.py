"""The HTTP core against the real emulator process: throttling storms, injected faults, key rotation."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.d365.errors import D365ServerError
from shared.d365.retry import RetryPolicy
from shared.d365.transport import D365Transport
from tests.support.d365 import faults, limits, logged, make_transport, token_provider
from tests.support.stack import EmulatorInfo

SESSION_INFO = "/api/services/UserSessionService/AifUserSessionService/GetUserSessionInfo"
LISTING = "/api/services/UserSessionService/AifUserSessionService"


class EmulatorTokens:
    """The production provider, counting fetches and invalidations (the key-rotation test needs them)."""

    def __init__(self, emulator: EmulatorInfo) -> None:
        self._provider = token_provider(emulator)
        self._token: str | None = None
        self._lock = threading.Lock()
        self.fetches = 0
        self.invalidations = 0

    def get_token(self) -> str:
        with self._lock:
            if self._token is None:
                self._token = self._provider.get_token()
                self.fetches += 1
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token = None
            self._provider.invalidate()
            self.invalidations += 1


@pytest.fixture
def tokens(clean_emulator: EmulatorInfo) -> EmulatorTokens:
    return EmulatorTokens(clean_emulator)


@pytest.fixture
def transport(clean_emulator: EmulatorInfo, tokens: EmulatorTokens):
    with make_transport(clean_emulator, tokens=tokens) as t:
        yield t


def test_a_plain_call_succeeds(transport: D365Transport) -> None:
    info = transport.request("POST", SESSION_INFO).json()
    assert info["Company"].lower() == "usmf"


def test_429_storm_ends_with_zero_lost_operations(
    clean_emulator: EmulatorInfo,
    transport: D365Transport,
) -> None:
    limits(clean_emulator, window_seconds=1, requests={"enabled": True, "limit": 8})
    started = time.monotonic()

    def one(n: int) -> str:
        # POSTs: a 429 means D365 did no work, so even non-idempotent calls are retried
        return str(transport.request("POST", SESSION_INFO).json()["Company"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        companies = list(pool.map(one, range(24)))
    assert len(companies) == 24
    stats = transport.stats.snapshot()
    assert stats["retries"].get("throttled", 0) > 0
    assert stats["failures"] == {}
    assert time.monotonic() - started < 30
    answered = [r["status"] for r in logged(clean_emulator, SESSION_INFO)]
    assert answered.count(200) == 24
    assert answered.count(429) == stats["retries"]["throttled"]


def test_resource_pressure_429_is_waited_out(clean_emulator: EmulatorInfo) -> None:
    limits(clean_emulator, resource={"next_requests": 2, "retry_after_seconds": 1})
    sleeps: list[float] = []  # resource pressure counts requests, not time: no need to really wait
    with make_transport(clean_emulator, policy=RetryPolicy(), sleep=sleeps.append) as transport:
        assert transport.request("GET", LISTING).status_code == 200
    assert sleeps == [1.0, 1.0]


def test_injected_503s_are_retried(clean_emulator: EmulatorInfo, transport: D365Transport) -> None:
    faults(clean_emulator, {"family": "services", "error_rate": 1.0, "error_status": 503, "count": 2})
    assert "GetUserSessionInfo" in str(transport.request("GET", LISTING).json())
    statuses = [r["status"] for r in logged(clean_emulator, LISTING)]
    assert statuses == [503, 503, 200]


def test_injected_503_on_a_post_is_not_retried(
    clean_emulator: EmulatorInfo,
    transport: D365Transport,
) -> None:
    faults(clean_emulator, {"family": "services", "error_rate": 1.0, "error_status": 503, "count": 1})
    with pytest.raises(D365ServerError) as caught:
        transport.request("POST", SESSION_INFO)
    assert caught.value.status_code == 503
    assert len(logged(clean_emulator, SESSION_INFO)) == 1


@pytest.mark.parametrize("mode", ["before_response", "mid_body"])
def test_dropped_connection_on_a_get_is_retried(
    clean_emulator: EmulatorInfo, transport: D365Transport, mode: str
) -> None:
    faults(clean_emulator, {"family": "services", "drop_rate": 1.0, "drop_mode": mode, "count": 1})
    assert transport.request("GET", LISTING).status_code == 200
    expected = "dropped" if mode == "before_response" else "truncated"
    assert transport.stats.snapshot()["retries"] == {expected: 1}


def test_dropped_odata_page_is_retried(clean_emulator: EmulatorInfo, transport: D365Transport) -> None:
    page = transport.request("GET", "/data/CustomersV3", params={"$top": "5"}).json()
    faults(clean_emulator, {"family": "odata", "drop_rate": 1.0, "drop_mode": "mid_body", "count": 1})
    again = transport.request("GET", "/data/CustomersV3", params={"$top": "5"}).json()
    assert again["value"] == page["value"]
    assert transport.stats.snapshot()["retries"] == {"truncated": 1}


def test_key_rotation_leads_to_one_refresh(
    clean_emulator: EmulatorInfo, transport: D365Transport, tokens: EmulatorTokens
) -> None:
    transport.request("GET", LISTING)
    clean_emulator.admin("POST", "tokens/rotate-key")
    assert transport.request("GET", LISTING).status_code == 200
    assert tokens.invalidations == 1
    assert tokens.fetches == 2
    assert [r["status"] for r in logged(clean_emulator, LISTING)] == [200, 401, 200]
