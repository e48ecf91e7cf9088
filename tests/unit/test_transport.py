"""The HTTP core over real loopback sockets (tests/support/scripted_server.py); injected sleep and clock."""

from __future__ import annotations

import io
import logging
import threading
import traceback
from collections.abc import Iterator

import pytest
import requests

from shared.d365.errors import (
    D365AuthError,
    D365ClientError,
    D365ConnectionError,
    D365Error,
    D365NotFoundError,
    D365ServerError,
    D365ThrottledError,
    D365TimeoutError,
)
from shared.d365.retry import RetryPolicy
from shared.d365.transport import D365Transport
from tests.support.scripted_server import Reply, ScriptedServer, refused_url

SECRET_TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.c2lnbmF0dXJl"
FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05, jitter="none")


class Tokens:
    """Counts fetches and invalidations; each invalidation hands out a new token."""

    def __init__(self) -> None:
        self.generation = 0
        self.fetches = 0
        self.invalidations = 0

    def get_token(self) -> str:
        self.fetches += 1
        return f"{SECRET_TOKEN}{self.generation}"

    def invalidate(self) -> None:
        self.invalidations += 1
        self.generation += 1


class FakeClock:
    """A monotonic clock that only moves when the transport sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make(
    server: ScriptedServer, tokens: Tokens, clock: FakeClock, policy: RetryPolicy = FAST, **kwargs: object
) -> D365Transport:
    return D365Transport(server.url, tokens, policy=policy, sleep=clock.sleep, clock=clock, **kwargs)  # type: ignore[arg-type]


# --- throttling ----------------------------------------------------------------------------------------


def test_429_then_200_honours_retry_after(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "7"}), Reply.json({"value": [1]}))
    response = make(server, tokens, clock).request("GET", "/data/CustomersV3")
    assert response.json() == {"value": [1]}
    assert clock.sleeps == [7.0]
    assert len(server.requests) == 2


def test_a_429_holds_back_every_other_call_on_the_transport(server, tokens, clock) -> None:
    # The second call starts while the first call's Retry-After is still running (the first call's sleep
    # is frozen here): it waits for the same moment instead of collecting a 429 of its own.
    server.add(Reply(429, {"Retry-After": "5"}), Reply(200), Reply(200))
    transport = make(server, tokens, clock)
    frozen: list[float] = []
    transport._sleep = frozen.append
    assert transport.request("GET", "/data/A").status_code == 200
    assert transport.request("GET", "/data/B").status_code == 200
    assert frozen == [5.0, 5.0]
    assert [r.route for r in server.requests] == ["/data/A", "/data/A", "/data/B"]
    assert transport.stats.snapshot()["retries"] == {"throttled": 1, "throttle_gate": 1}


def test_the_throttle_gate_never_holds_back_sas_blob_calls(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "5"}), Reply(200), Reply(201))
    transport = make(server, tokens, clock)
    frozen: list[float] = []
    transport._sleep = frozen.append
    transport.request("GET", "/data/A")
    blob_url = f"{server.url}/dmf/package.zip?sv=2014-02-14&sig=x"
    assert transport.request("PUT", blob_url, data=b"zip", authenticate=False).status_code == 201
    assert frozen == [5.0]


def test_retry_after_is_capped(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "3600"}), Reply(204))
    transport = make(server, tokens, clock, RetryPolicy(retry_after_cap=5))
    assert transport.request("DELETE", "/data/X(1)").status_code == 204
    assert clock.sleeps == [5.0]


def test_429_on_post_is_retried_because_d365_did_no_work(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "1"}), Reply(429, {"Retry-After": "2"}), Reply.json({"id": 1}, 201))
    transport = make(server, tokens, clock)
    assert transport.request("POST", "/data/X", json={"a": 1}).status_code == 201
    assert clock.sleeps == [1.0, 2.0]
    assert [r.body for r in server.requests] == [b'{"a":1}'] * 3
    stats = transport.stats.snapshot()
    assert stats["throttled_seconds"] == 3.0
    assert stats["retries"] == {"throttled": 2}


def test_429_storm_outlasts_the_error_budget(server, tokens, clock) -> None:
    server.add(*[Reply(429, {"Retry-After": "1"})] * 10, Reply(200))
    transport = make(server, tokens, clock, RetryPolicy(max_attempts=2))
    assert transport.request("GET", "/data/X").status_code == 200
    assert clock.sleeps == [1.0] * 10


def test_throttled_past_the_deadline_raises_at_once_with_retry_after(server, tokens, clock) -> None:
    server.add(
        Reply(429, {"Retry-After": "100"}),
        Reply(429, {"Retry-After": "100"}),
        Reply.odata_error(
            429, "Number of concurrent requests exceeded the limit of 52.", headers={"Retry-After": "100"}
        ),
    )
    transport = make(server, tokens, clock, RetryPolicy(total_timeout=250))
    with pytest.raises(D365ThrottledError) as caught:
        transport.request("GET", "/data/X")
    assert clock.sleeps == [100.0, 100.0]  # a third wait would end at 300 s > 250 s: no sleep at all
    assert clock.now - 1000.0 < 250
    assert caught.value.retry_after == 100.0
    assert caught.value.status_code == 429
    assert "exceeded the limit of 52" in str(caught.value)


# --- server errors and idempotency ---------------------------------------------------------------------


def test_503_storm_then_success_backs_off(server, tokens, clock) -> None:
    server.add(*[Reply(503)] * 4, Reply.json([]))
    transport = make(server, tokens, clock, RetryPolicy(backoff_base=0.1, backoff_max=10, jitter="none"))
    assert transport.request("GET", "/data/X").json() == []
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8])


def test_503_with_retry_after_honours_it(server, tokens, clock) -> None:
    server.add(Reply(503, {"Retry-After": "3"}), Reply(200))
    make(server, tokens, clock).request("GET", "/data/X")
    assert clock.sleeps == [3.0]


def test_5xx_exhausts_the_attempt_budget(server, tokens, clock) -> None:
    server.add(*[Reply.odata_error(500, "An error has occurred.", "boom")] * 3)
    with pytest.raises(D365ServerError) as caught:
        make(server, tokens, clock, RetryPolicy(max_attempts=3, backoff_base=0.01)).request("GET", "/data/X")
    assert len(server.requests) == 3
    assert caught.value.inner_message == "boom"


def test_5xx_on_post_is_not_retried(server, tokens, clock) -> None:
    server.add(Reply.odata_error(500, "An error has occurred.", "Posting failed"), Reply(200))
    with pytest.raises(D365ServerError, match="Posting failed"):
        make(server, tokens, clock).request("POST", "/data/X", json={})
    assert len(server.requests) == 1
    assert clock.sleeps == []


def test_5xx_on_post_marked_idempotent_is_retried(server, tokens, clock) -> None:
    server.add(Reply(502), Reply.json(True))
    response = make(server, tokens, clock).request("POST", "/api/services/G/S/Get", idempotent=True)
    assert response.json() is True
    assert len(server.requests) == 2


def test_patch_with_if_match_is_retried(server, tokens, clock) -> None:
    server.add(Reply(504), Reply(204))
    transport = make(server, tokens, clock)
    transport.request("PATCH", "/data/X(1)", json={"a": 1}, headers={"If-Match": 'W/"x"'})
    assert len(server.requests) == 2


# --- network errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", [False, True])
def test_connection_closed_before_answer_is_retried_for_get(server, tokens, clock, reset: bool) -> None:
    server.add(Reply(drop="before_response", reset=reset), Reply.json({"ok": 1}))
    assert make(server, tokens, clock).request("GET", "/data/X").json() == {"ok": 1}
    assert len(server.requests) == 2


def test_connection_closed_before_answer_is_not_retried_for_post(server, tokens, clock) -> None:
    # D365 may have received and run the request: repeating it could create a second record
    server.add(Reply(drop="before_response"), Reply(201))
    with pytest.raises(D365ConnectionError) as caught:
        make(server, tokens, clock).request("POST", "/data/X", json={"a": 1})
    assert len(server.requests) == 1
    assert "dropped" in str(caught.value)
    assert isinstance(caught.value.__cause__, requests.ConnectionError)


@pytest.mark.parametrize("drop", ["mid_body", "mid_chunks"])
def test_truncated_body_is_retried_for_get(server, tokens, clock, drop: str) -> None:
    page = Reply.json({"value": list(range(500))})
    server.add(Reply(page.status, page.headers, page.body, drop=drop), page)  # type: ignore[arg-type]
    assert make(server, tokens, clock).request("GET", "/data/X").json()["value"][-1] == 499
    assert len(server.requests) == 2


def test_truncated_body_on_post_is_not_retried(server, tokens, clock) -> None:
    server.add(Reply(201, {}, b'{"id": 12345678}', drop="mid_body"), Reply(201))
    with pytest.raises(D365ConnectionError, match="truncated"):
        make(server, tokens, clock).request("POST", "/data/X", json={})
    assert len(server.requests) == 1


def test_read_timeout_is_retried_for_get(server, tokens, clock) -> None:
    server.add(Reply(200, delay=1.0), Reply.json(1))
    transport = make(server, tokens, clock, read_timeout=0.2)
    assert transport.request("GET", "/data/X").json() == 1
    assert transport.stats.snapshot()["retries"] == {"read_timeout": 1}


def test_read_timeout_on_post_raises_timeout_error(server, tokens, clock) -> None:
    server.add(Reply(200, delay=1.0))
    with pytest.raises(D365TimeoutError):
        make(server, tokens, clock, read_timeout=0.2).request("POST", "/data/X", json={})
    assert len(server.requests) == 1


def test_connection_refused_is_retried_even_for_post_then_fails(tokens, clock) -> None:
    transport = D365Transport(
        refused_url(),
        tokens,
        policy=RetryPolicy(max_attempts=3, jitter="none"),
        sleep=clock.sleep,
        clock=clock,
    )
    with pytest.raises(D365ConnectionError) as caught:
        transport.request("POST", "/data/X", json={})
    assert clock.sleeps == [0.5, 1.0]  # nothing was sent, so even a POST may be tried again
    assert "connect" in str(caught.value)


def test_network_failures_until_the_deadline_raise_timeout_error(tokens, clock) -> None:
    transport = D365Transport(
        refused_url(),
        tokens,
        sleep=clock.sleep,
        clock=clock,
        policy=RetryPolicy(max_attempts=100, total_timeout=10, backoff_base=2, jitter="none"),
    )
    with pytest.raises(D365TimeoutError, match="deadline"):
        transport.request("GET", "/data/X")
    assert sum(clock.sleeps) < 10
    assert clock.sleeps == [2.0, 4.0]  # the next 8 s wait would end at 14 s


def test_total_deadline_shortens_the_read_timeout(server, tokens) -> None:
    server.add(Reply(200, delay=2.0))
    transport = D365Transport(server.url, tokens, policy=RetryPolicy(total_timeout=0.3), read_timeout=60)
    with pytest.raises(D365TimeoutError):
        transport.request("GET", "/data/X")


# --- 4xx and auth --------------------------------------------------------------------------------------


def test_400_with_d365_envelope_carries_the_innererror_message(server, tokens, clock) -> None:
    server.add(
        Reply.odata_error(400, "An error has occurred.", "Field 'CustomerGroupId' must be filled in."),
        Reply(200),
    )
    with pytest.raises(D365ClientError) as caught:
        make(server, tokens, clock).request("POST", "/data/CustomersV3", json={})
    error = caught.value
    assert error.status_code == 400
    assert error.message == "Field 'CustomerGroupId' must be filled in."
    assert error.inner_type == "System.InvalidOperationException"
    assert len(server.requests) == 1


def test_404_raises_not_found_unless_wanted(server, tokens, clock) -> None:
    server.add(Reply.odata_error(404, "Resource not found for the segment 'Nope'."), Reply(404))
    transport = make(server, tokens, clock)
    with pytest.raises(D365NotFoundError, match="segment 'Nope'"):
        transport.request("GET", "/data/Nope")
    assert transport.request("GET", "/data/Nope", ok_statuses=(404,)).status_code == 404
    assert len(server.requests) == 2


def test_401_refreshes_the_token_exactly_once(server, tokens, clock) -> None:
    server.add(Reply(401), Reply.json({"ok": True}))
    transport = make(server, tokens, clock)
    assert transport.request("GET", "/data/X").json() == {"ok": True}
    assert tokens.invalidations == 1
    assert tokens.fetches == 2
    sent = [r.headers["authorization"] for r in server.requests]
    assert sent == [f"Bearer {SECRET_TOKEN}0", f"Bearer {SECRET_TOKEN}1"]
    assert clock.sleeps == []


def test_second_401_raises_auth_error(server, tokens, clock) -> None:
    server.add(Reply(401), Reply(401, {}, b"Unauthorized"), Reply(200))
    with pytest.raises(D365AuthError) as caught:
        make(server, tokens, clock).request("POST", "/data/X", json={})
    assert caught.value.status_code == 401
    assert tokens.invalidations == 1
    assert len(server.requests) == 2


def test_403_is_not_retried_nor_refreshed(server, tokens, clock) -> None:
    server.add(Reply(403), Reply(200))
    with pytest.raises(D365AuthError):
        make(server, tokens, clock).request("GET", "/data/X")
    assert tokens.invalidations == 0


# --- request identity and headers ----------------------------------------------------------------------


def test_request_id_is_the_same_across_retries_and_on_the_error(server, tokens, clock) -> None:
    server.add(
        Reply(503),
        Reply(drop="before_response"),
        Reply.odata_error(500, "x", "y", headers={"ms-dyn-aid": "d365-activity-1"}),
    )
    with pytest.raises(D365ServerError) as caught:
        make(server, tokens, clock, RetryPolicy(max_attempts=3, backoff_base=0.01)).request("GET", "/data/X")
    ids = {r.headers["x-ms-client-request-id"] for r in server.requests}
    assert len(server.requests) == 3
    assert ids == {caught.value.request_id}
    assert caught.value.server_request_id == "d365-activity-1"
    assert f"request_id={caught.value.request_id}" in str(caught.value)


def test_each_call_gets_its_own_request_id(server, tokens, clock) -> None:
    server.add(Reply(200), Reply(200))
    transport = make(server, tokens, clock)
    transport.request("GET", "/data/X")
    transport.request("GET", "/data/X")
    assert len({r.headers["x-ms-client-request-id"] for r in server.requests}) == 2


def test_standard_headers(server, tokens, clock) -> None:
    server.add(Reply(200), Reply(200))
    transport = make(server, tokens, clock, user_agent="ua-test/1")
    transport.request("GET", "/data/CustomersV3", params={"$top": "1"}, headers={"Prefer": "x"})
    transport.request("POST", "/api/services/G/S/Op")
    odata, service = server.requests
    assert odata.headers["odata-version"] == "4.0"
    assert odata.headers["odata-maxversion"] == "4.0"
    assert odata.headers["accept"] == "application/json"
    assert odata.headers["user-agent"] == "ua-test/1"
    assert odata.headers["prefer"] == "x"
    assert odata.query == {"$top": ["1"]}
    assert "odata-version" not in service.headers
    assert service.headers["content-length"] == "0"
    assert service.body == b""


def test_sas_url_without_authentication_gets_no_bearer_token(server, tokens, clock) -> None:
    server.add(Reply(201))
    transport = D365Transport("https://contoso.example", tokens, sleep=clock.sleep, clock=clock)
    sas = f"{server.url}/container/blob.zip?sv=2022-11-02&sp=w&sig=TOPSECRETSIG"
    transport.request("PUT", sas, data=b"zip", authenticate=False, headers={"x-ms-blob-type": "BlockBlob"})
    (sent,) = server.requests
    assert "authorization" not in sent.headers
    assert "odata-version" not in sent.headers
    assert tokens.fetches == 0
    assert sent.body == b"zip"


def test_the_token_is_never_sent_to_another_host(server, tokens, clock) -> None:
    transport = D365Transport("https://contoso.example", tokens, sleep=clock.sleep, clock=clock)
    with pytest.raises(ValueError, match="refusing"):
        transport.request("GET", f"{server.url}/data/X?sig=S3CR3T")
    assert server.requests == []


def test_absolute_next_link_on_the_same_host_is_authenticated(server, tokens, clock) -> None:
    server.add(Reply(200))
    make(server, tokens, clock).request("GET", f"{server.url}/data/X?$skip=10000")
    assert server.requests[0].headers["authorization"].startswith("Bearer ")


# --- secrets stay out of errors and logs ---------------------------------------------------------------


def test_secrets_never_reach_errors_or_log_records(server, tokens, clock, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    server.add(Reply(503), Reply.odata_error(403, "AuthorizationPermissionMismatch"))
    transport = make(server, tokens, clock)
    sas_url = f"{server.url}/c/b?sv=1&sig=TOPSECRETSIG"
    with pytest.raises(D365AuthError) as caught:
        transport.request("GET", sas_url, authenticate=False)
    secret_path = "/data/X?code=FUNCKEY&sig=TOPSECRETSIG"  # kept off the raising line: tracebacks quote it
    nowhere = D365Transport(
        refused_url(), tokens, sleep=clock.sleep, clock=clock, policy=RetryPolicy(max_attempts=2)
    )
    with pytest.raises(D365Error) as refused:
        nowhere.request("GET", secret_path)
    server.add(Reply(500))
    with pytest.raises(D365ServerError) as with_token:
        transport.request("POST", "/data/X", json={})
    texts = [
        str(caught.value),
        repr(caught.value),
        str(refused.value),
        str(with_token.value),
        "".join(traceback.format_exception(refused.value)),
        *(record.getMessage() for record in caplog.records),
    ]
    assert any("retrying" in text for text in texts)
    for text in texts:
        assert "TOPSECRETSIG" not in text
        assert "FUNCKEY" not in text
        assert SECRET_TOKEN not in text
    assert "sig=***" in str(caught.value)


# --- request bodies ------------------------------------------------------------------------------------


def test_file_like_body_is_rewound_before_a_retry(server, tokens, clock) -> None:
    server.add(Reply(503), Reply(drop="before_response"), Reply(201))
    body = io.BytesIO(b"HEADER" + b"payload" * 100)
    body.seek(6)  # the body starts where the stream is when the call begins
    make(server, tokens, clock).request("PUT", "/data/X", data=body)
    assert [r.body for r in server.requests] == [b"payload" * 100] * 3


def test_iterator_body_is_never_retried(server, tokens, clock) -> None:
    server.add(Reply(503), Reply(200))
    with pytest.raises(D365ServerError):
        make(server, tokens, clock).request("PUT", "/data/X", data=iter([b"a", b"b"]))
    assert [r.body for r in server.requests] == [b"ab"]


def test_iterator_body_throttled_raises_with_retry_after(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "4"}), Reply(200))
    with pytest.raises(D365ThrottledError) as caught:
        make(server, tokens, clock).request("PUT", "/data/X", data=(b for b in [b"a"]))
    assert caught.value.retry_after == 4.0
    assert clock.sleeps == []


def test_json_and_data_together_are_refused(server, tokens, clock) -> None:
    with pytest.raises(ValueError):
        make(server, tokens, clock).request("POST", "/data/X", json={}, data=b"x")


# --- streaming, stats, concurrency ---------------------------------------------------------------------


def test_stream_returns_an_unread_response(server, tokens, clock) -> None:
    server.add(Reply(200, {}, b"x" * 100_000))
    with make(server, tokens, clock).request("GET", "/data/X", stream=True) as response:
        assert sum(len(chunk) for chunk in response.iter_content(8192)) == 100_000


def test_stream_error_still_carries_the_message(server, tokens, clock) -> None:
    server.add(Reply.odata_error(400, "outer", "the inner reason"))
    with pytest.raises(D365ClientError, match="the inner reason"):
        make(server, tokens, clock).request("GET", "/data/X", stream=True)


def test_stats_count_calls_attempts_retries_and_failures(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "2"}), Reply(500), Reply(200), Reply(404))
    transport = make(server, tokens, clock)
    transport.request("GET", "/data/X")
    with pytest.raises(D365NotFoundError):
        transport.request("GET", "/data/Y")
    stats = transport.stats.snapshot()
    assert stats["calls"] == 2
    assert stats["attempts"] == 4
    assert stats["retries"] == {"throttled": 1, "status_500": 1}
    assert stats["failures"] == {"D365NotFoundError": 1}
    assert stats["throttled_seconds"] == 2.0
    assert stats["slept_seconds"] == pytest.approx(2.01)


def test_concurrent_calls_share_one_transport(tokens) -> None:
    def answer(request):
        return Reply.json({"path": request.route})

    with ScriptedServer(answer) as srv:
        transport = D365Transport(srv.url, tokens, pool_maxsize=8)
        results: list[str] = []
        lock = threading.Lock()

        def work(n: int) -> None:
            for i in range(10):
                path = transport.request("GET", f"/data/T{n}_{i}").json()["path"]
                with lock:
                    results.append(path)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        transport.close()
    assert sorted(results) == sorted(f"/data/T{n}_{i}" for n in range(8) for i in range(10))
    assert srv.connections <= 8 + 2  # pooled: connections are reused, not one per call


# --- construction and per-call options -----------------------------------------------------------------


def test_per_call_timeout_overrides_the_deadline(server, tokens, clock) -> None:
    server.add(Reply(429, {"Retry-After": "10"}), Reply(200))
    with pytest.raises(D365ThrottledError):
        make(server, tokens, clock).request("GET", "/data/X", timeout=5)
    assert clock.sleeps == []


def test_redirects_are_not_followed(server, tokens, clock) -> None:
    server.add(Reply(302, {"Location": "https://login.example/authorize"}))
    with pytest.raises(D365ClientError) as caught:
        make(server, tokens, clock).request("GET", "/data/X")
    assert caught.value.status_code == 302
    assert len(server.requests) == 1


def test_authenticated_call_needs_a_token_provider(server, clock) -> None:
    transport = D365Transport(server.url, None, sleep=clock.sleep, clock=clock)
    with pytest.raises(ValueError, match="token provider"):
        transport.request("GET", "/data/X")
    server.add(Reply(200))
    assert transport.request("GET", "/health", authenticate=False).status_code == 200


def test_from_settings_takes_timeouts_and_policy(tokens) -> None:
    settings = pytest.importorskip("shared.settings_sections")
    http = settings.HttpSettings(connect_timeout=3.0, read_timeout=40.0, retry_max_attempts=2)
    transport = D365Transport.from_settings("https://contoso.example/", tokens, http)
    assert (transport.connect_timeout, transport.read_timeout) == (3.0, 40.0)
    assert transport.policy.max_attempts == 2
    assert transport.base_url == "https://contoso.example"


def test_caller_session_is_used_and_left_open(server, tokens, clock) -> None:
    server.add(Reply(200))
    session = requests.Session()
    with D365Transport(server.url, tokens, session=session, sleep=clock.sleep, clock=clock) as transport:
        transport.request("GET", "/data/X")
    assert transport.session is session
    session.close()


def test_truncated_error_body_on_a_streamed_call_is_retried(server, tokens, clock) -> None:
    error = Reply.odata_error(503, "busy", "x" * 200)
    server.add(Reply(503, error.headers, error.body, drop="mid_body"), Reply(200, {}, b"ok"))
    with make(server, tokens, clock).request("GET", "/data/X", stream=True) as response:
        assert response.content == b"ok"
    assert len(server.requests) == 2
