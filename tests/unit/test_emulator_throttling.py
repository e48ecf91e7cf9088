"""Service protection limits (emulator/throttling.py) on a fake clock: exact sliding window, Retry-After,
the D365 messages (ref §2.3), and the throughput a well-behaved client achieves."""

from __future__ import annotations

import heapq

import pytest

from emulator.throttling import (
    MSG_CONCURRENCY,
    MSG_EXECUTION,
    MSG_REQUESTS,
    MSG_RESOURCE,
    Admission,
    Rejection,
    ServiceProtection,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(**settings: object) -> tuple[ServiceProtection, Clock]:
    clock = Clock()
    limits = ServiceProtection(clock=clock)
    limits.update(settings)
    return limits, clock


def test_disabled_by_default_never_throttles() -> None:
    limits, _ = limiter()
    assert not limits.active
    assert all(isinstance(limits.admit("k"), Admission) for _ in range(10_000))


def test_request_count_limit_message_and_retry_after() -> None:
    limits, clock = limiter(window_seconds=10, requests={"enabled": True, "limit": 3})
    for _ in range(3):
        assert isinstance(limits.admit("k"), Admission)
        clock.now += 1.0
    verdict = limits.admit("k")
    assert isinstance(verdict, Rejection)
    assert verdict.kind == "requests"
    assert verdict.message == "Number of requests exceeded the limit of 3 over the time window of 10 seconds."
    # the oldest arrival (t=1000) leaves the window at 1010; now is 1003
    assert verdict.retry_after == 7
    clock.now = 1010.0
    assert isinstance(limits.admit("k"), Admission)


def test_default_messages_use_the_published_values() -> None:
    assert MSG_REQUESTS.format(limit=6000, window=300) == (
        "Number of requests exceeded the limit of 6000 over the time window of 300 seconds."
    )
    assert MSG_CONCURRENCY.format(limit=52) == "Number of concurrent requests exceeded the limit of 52."
    assert MSG_EXECUTION.format(limit=1200, window=300).startswith(
        "Combined execution time of incoming requests exceeded the limit of 1200 seconds over the time "
        "window of 300 seconds. Decrease the number of concurrent requests"
    )
    assert MSG_RESOURCE.startswith("This request could not be processed at this time")


def test_keys_are_independent() -> None:
    limits, _ = limiter(window_seconds=10, requests={"enabled": True, "limit": 1})
    assert isinstance(limits.admit("a"), Admission)
    assert isinstance(limits.admit("a"), Rejection)
    assert isinstance(limits.admit("b"), Admission)


def test_execution_time_limit() -> None:
    limits, clock = limiter(window_seconds=10, execution_time={"enabled": True, "limit_seconds": 2})
    for _ in range(2):
        admission = limits.admit("k")
        assert isinstance(admission, Admission)
        clock.now += 1.0
        limits.release(admission)  # 1 s each; finished at 1001 and 1002
    verdict = limits.admit("k")
    assert isinstance(verdict, Rejection)
    assert verdict.kind == "execution_time"
    assert "exceeded the limit of 2 seconds over the time window of 10 seconds" in verdict.message
    # dropping the first execution (finished 1001) brings the total below 2 s at 1011
    assert verdict.retry_after == 9
    clock.now = 1011.0
    assert isinstance(limits.admit("k"), Admission)


def test_concurrency_limit() -> None:
    limits, _ = limiter(concurrency={"enabled": True, "limit": 2})
    first, second = limits.admit("k"), limits.admit("k")
    assert isinstance(first, Admission)
    assert isinstance(second, Admission)
    verdict = limits.admit("k")
    assert isinstance(verdict, Rejection)
    assert verdict.message == "Number of concurrent requests exceeded the limit of 2."
    assert verdict.retry_after == 1
    limits.release(first)
    assert isinstance(limits.admit("k"), Admission)


def test_resource_pressure_next_requests_and_period() -> None:
    limits, clock = limiter(resource={"next_requests": 2, "retry_after_seconds": 3})
    assert limits.active
    for _ in range(2):
        verdict = limits.admit("k")
        assert isinstance(verdict, Rejection)
        assert verdict.kind == "resource"
        assert verdict.retry_after == 3
    assert isinstance(limits.admit("k"), Admission)
    limits.update({"resource": {"for_seconds": 2.5}})
    verdict = limits.admit("k")
    assert isinstance(verdict, Rejection)
    assert verdict.retry_after == 3
    clock.now += 2.5
    assert isinstance(limits.admit("k"), Admission)
    assert not limits.active


def test_early_retries_extend_the_interval() -> None:
    """Ref §2.3: continued demanding requests extend the interval; a patient client is not penalised."""
    limits, clock = limiter(window_seconds=10, requests={"enabled": True, "limit": 2})
    limits.admit("k")
    limits.admit("k")
    first = limits.admit("k")
    assert isinstance(first, Rejection)
    assert first.retry_after == 10
    clock.now += 5  # retrying before the announced Retry-After
    early = limits.admit("k")
    assert isinstance(early, Rejection)
    clock.now = 1010.0  # the original Retry-After moment: the early retry now holds a slot
    assert isinstance(limits.admit("k"), Admission)
    assert isinstance(limits.admit("k"), Rejection)


def test_update_rejects_bad_values() -> None:
    limits, _ = limiter()
    with pytest.raises(ValueError, match="window_seconds"):
        limits.update({"window_seconds": 0})
    with pytest.raises(ValueError, match="requests"):
        limits.update({"requests": 5})


def simulate(
    limit: int,
    window: float,
    duration: float,
    workers: int,
    service_time: float,
    *,
    ignore_retry_after: float | None = None,
) -> int:
    """A client with ``workers`` parallel loops that honour Retry-After (or retry after
    ``ignore_retry_after`` seconds instead); returns the admitted requests and checks that no window
    ever held more than ``limit`` admissions."""
    clock = Clock()
    start = clock.now
    limits = ServiceProtection(clock=clock)
    limits.update({"window_seconds": window, "requests": {"enabled": True, "limit": limit}})
    events = [(start + i * 0.001, i) for i in range(workers)]
    heapq.heapify(events)
    admitted: list[float] = []
    while events:
        at, worker = heapq.heappop(events)
        if at >= start + duration:
            continue
        clock.now = at
        verdict = limits.admit("client")
        if isinstance(verdict, Rejection):
            wait = verdict.retry_after if ignore_retry_after is None else ignore_retry_after
            heapq.heappush(events, (at + wait, worker))
            continue
        admitted.append(at)
        clock.now = at + service_time
        limits.release(verdict)
        heapq.heappush(events, (at + service_time, worker))
    for i, t in enumerate(admitted):  # exactness: never more than `limit` in any window
        j = i
        while j < len(admitted) and admitted[j] < t + window:
            j += 1
        assert j - i <= limit
    return len(admitted)


@pytest.mark.parametrize("workers", [1, 4, 16])
def test_a_client_honouring_retry_after_gets_90_percent_of_the_allowed_throughput(workers: int) -> None:
    limit, window, duration = 200, 10.0, 60.0
    admitted = simulate(limit, window, duration, workers, service_time=0.01)
    allowed = limit * duration / window
    assert admitted >= 0.9 * allowed, (admitted, allowed)


@pytest.mark.parametrize(("workers", "service_time"), [(1, 0.001), (8, 0.01), (64, 0.05), (400, 0.2)])
def test_throughput_holds_for_many_parallel_workers(workers: int, service_time: float) -> None:
    admitted = simulate(200, 10.0, 60.0, workers, service_time)
    assert admitted >= 0.9 * 1200, admitted


def test_a_client_ignoring_retry_after_is_held_back() -> None:
    """Continued demanding requests extend the interval (ref §2.3): hammering gets less than waiting."""
    honest = simulate(200, 10.0, 60.0, 4, 0.01)
    hammering = simulate(200, 10.0, 60.0, 4, 0.01, ignore_retry_after=0.05)
    assert hammering < 0.75 * honest, (hammering, honest)
