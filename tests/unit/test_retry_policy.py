"""The retry policy's pure decisions: backoff and jitter, Retry-After parsing, caps, deadline, idempotency."""

from __future__ import annotations

import dataclasses
from email.utils import formatdate

import pytest

from shared.d365.retry import Decision, ErrorKind, RetryPolicy, is_idempotent, parse_retry_after

NOW = 1_750_000_000.0


# --- Retry-After ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 30 ", 30.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("Mon, 99 Foo 2024", None),
    ],
)
def test_parse_retry_after_seconds_and_garbage(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after(formatdate(NOW + 42, usegmt=True), now=NOW) == pytest.approx(42)
    assert parse_retry_after(formatdate(NOW - 42, usegmt=True), now=NOW) == 0.0


# --- idempotency ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "get", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_safe_methods_are_idempotent(method: str) -> None:
    assert is_idempotent(method)


def test_post_and_bare_patch_are_not_idempotent_but_guarded_patch_is() -> None:
    assert not is_idempotent("POST")
    assert not is_idempotent("PATCH", {"Content-Type": "application/json"})
    assert is_idempotent("PATCH", {"if-match": 'W/"abc"'})


def test_explicit_idempotency_wins() -> None:
    assert is_idempotent("POST", explicit=True)
    assert not is_idempotent("GET", explicit=False)


# --- backoff -------------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_to_the_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4, jitter="none")
    assert [policy.backoff(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert policy.backoff(10_000) == 4.0  # no overflow on absurd counts


@pytest.mark.parametrize("failures", [1, 2, 3, 8])
def test_full_jitter_stays_within_zero_and_the_ceiling(failures: int) -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=30)
    ceiling = min(30, 0.5 * 2 ** (failures - 1))
    samples = [policy.backoff(failures) for _ in range(500)]
    assert all(0 <= s <= ceiling for s in samples)
    assert max(samples) - min(samples) > ceiling / 4  # it really jitters
    assert policy.backoff(failures, rand=0.0) == 0.0
    assert policy.backoff(failures, rand=0.999999) == pytest.approx(ceiling, rel=1e-5)


def test_equal_jitter_keeps_half_the_delay() -> None:
    policy = RetryPolicy(backoff_base=1, backoff_max=30, jitter="equal")
    assert policy.backoff(3, rand=0.0) == 2.0
    assert policy.backoff(3, rand=1.0) == 4.0


def test_decorrelated_jitter_is_bounded_by_base_and_cap() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=10, jitter="decorrelated")
    assert policy.backoff(1, previous_delay=0.0, rand=0.9) == 0.5
    assert policy.backoff(2, previous_delay=2.0, rand=1.0) == 6.0
    assert policy.backoff(5, previous_delay=8.0, rand=1.0) == 10.0


# --- decisions -----------------------------------------------------------------------------------------

POLICY = RetryPolicy(
    max_attempts=4,
    max_throttle_attempts=5,
    total_timeout=100,
    backoff_base=1,
    backoff_max=8,
    retry_after_cap=20,
    jitter="none",
)


def decide(policy: RetryPolicy = POLICY, **kwargs: object) -> Decision:
    args: dict[str, object] = {"attempts": 1, "idempotent": True, "elapsed": 0.0}
    args.update(kwargs)
    return policy.decide(**args)  # type: ignore[arg-type]


def test_429_honours_retry_after_even_for_post() -> None:
    assert decide(status=429, throttled=1, retry_after=7, idempotent=False) == Decision(True, 7, "throttled")


def test_429_retry_after_is_capped() -> None:
    assert decide(status=429, throttled=1, retry_after=3600).delay == 20


def test_429_without_retry_after_backs_off_but_never_below_the_base() -> None:
    decision = decide(status=429, throttled=3, rand=0.0)
    assert decision.retry
    assert decision.delay == 4.0
    jittery = dataclasses.replace(POLICY, jitter="full")
    assert decide(jittery, status=429, throttled=1, rand=0.0).delay == 1.0


def test_429s_do_not_use_up_the_error_budget() -> None:
    # 10 attempts, 9 of them throttled: only one error-attempt used, so a 503 may still be retried
    assert decide(attempts=10, throttled=9, status=503).retry
    assert decide(attempts=12, throttled=5, status=429).retry is True
    assert decide(attempts=12, throttled=6, status=429) == Decision(False, 0.0, "throttle_attempts_exhausted")


def test_deadline_stops_instead_of_sleeping_past_it() -> None:
    assert decide(status=429, throttled=1, retry_after=15, elapsed=80).retry
    stop = decide(status=429, throttled=1, retry_after=15, elapsed=90)
    assert (stop.retry, stop.reason, stop.delay) == (False, "deadline", 15)
    assert decide(status=503, attempts=3, elapsed=97).reason == "deadline"  # backoff 4 s would pass 100


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_retried_only_when_idempotent(status: int) -> None:
    assert decide(status=status, attempts=2) == Decision(True, 2.0, f"status_{status}")
    assert decide(status=status, idempotent=False) == Decision(False, 0.0, f"status_{status}_not_idempotent")


def test_503_retry_after_is_honoured_instead_of_backoff() -> None:
    assert decide(status=503, retry_after=9).delay == 9


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 412, 413, 422, 501])
def test_other_statuses_are_never_retried(status: int) -> None:
    decision = decide(status=status, retry_after=1)
    assert not decision.retry
    assert decision.reason == f"status_{status}_not_retryable"


def test_error_attempts_are_bounded() -> None:
    assert decide(status=500, attempts=3).retry
    assert decide(status=500, attempts=4) == Decision(False, 0.0, "attempts_exhausted")


def test_connect_errors_are_safe_for_any_method() -> None:
    assert decide(error=ErrorKind.CONNECT, idempotent=False).retry


@pytest.mark.parametrize("kind", [ErrorKind.DROPPED, ErrorKind.READ_TIMEOUT, ErrorKind.TRUNCATED])
def test_errors_after_sending_need_idempotency(kind: ErrorKind) -> None:
    assert decide(error=kind).retry
    assert decide(error=kind, idempotent=False) == Decision(False, 0.0, f"{kind.value}_not_idempotent")


def test_fatal_errors_are_never_retried() -> None:
    assert decide(error=ErrorKind.FATAL) == Decision(False, 0.0, "fatal")


def test_exactly_one_of_status_or_error() -> None:
    with pytest.raises(ValueError):
        decide()
    with pytest.raises(ValueError):
        decide(status=500, error=ErrorKind.CONNECT)


def test_429_can_be_excluded() -> None:
    policy = RetryPolicy(retry_statuses=frozenset({503}))
    assert not decide(policy, status=429, throttled=1).retry


# --- construction --------------------------------------------------------------------------------------


def test_defaults_match_the_documented_policy() -> None:
    policy = RetryPolicy()
    assert (
        policy.max_attempts,
        policy.total_timeout,
        policy.backoff_base,
        policy.backoff_max,
        policy.retry_after_cap,
    ) == (6, 300.0, 0.5, 30.0, 120.0)
    assert policy.retry_statuses == {408, 429, 500, 502, 503, 504}


def test_policy_is_an_immutable_value() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 1  # type: ignore[misc]
    assert policy == RetryPolicy()
    assert hash(policy) == hash(RetryPolicy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"total_timeout": 0},
        {"backoff_base": 5, "backoff_max": 1},
        {"jitter": "wild"},
        {"max_throttle_attempts": -1},
        {"retry_after_cap": -1},
    ],
)
def test_invalid_values_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class HttpSettingsLike:
    retry_max_attempts: int = 3
    retry_max_seconds: float = 60.0
    retry_after_cap_seconds: float = 10.0
    backoff_base_seconds: float = 0.25
    backoff_max_seconds: float = 5.0


def test_from_settings_maps_the_app_settings() -> None:
    policy = RetryPolicy.from_settings(HttpSettingsLike(), jitter="equal")
    assert policy == RetryPolicy(
        max_attempts=3,
        total_timeout=60.0,
        retry_after_cap=10.0,
        backoff_base=0.25,
        backoff_max=5.0,
        jitter="equal",
    )


def test_from_settings_validates() -> None:
    with pytest.raises(ValueError):
        RetryPolicy.from_settings(HttpSettingsLike(retry_max_attempts=0))


def test_the_real_http_settings_fit() -> None:
    settings = pytest.importorskip("shared.settings_sections")
    assert RetryPolicy.from_settings(settings.HttpSettings()) == RetryPolicy()
