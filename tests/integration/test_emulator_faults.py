"""Fault injection over real HTTP: latency, deterministic and seeded errors, and dropped connections as
``requests`` sees them (ConnectionError before any response, ChunkedEncodingError mid-body)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.support.stack import EmulatorInfo


@pytest.fixture(autouse=True)
def leave_emulator_clean(emulator: EmulatorInfo) -> Iterator[None]:
    """The session emulator is shared with other modules: no fault, limit or app outlives a test here."""
    yield
    emulator.admin("POST", "reset")


def bearer(emulator: EmulatorInfo) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.admin('POST', 'tokens/issue')['access_token']}"}


def discovery_url(emulator: EmulatorInfo, base: str | None = None) -> str:
    return f"{base or emulator.base_url}/{emulator.tenant_id}/v2.0/.well-known/openid-configuration"


def test_latency(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    prefix = f"/{emulator.tenant_id}/v2.0"
    emulator.admin("POST", "faults", json={"family": "token", "path_prefix": prefix, "latency_ms": 400})
    started = time.monotonic()
    assert requests.get(discovery_url(emulator), timeout=10).status_code == 200
    slow = time.monotonic() - started
    started = time.monotonic()
    requests.get(f"{emulator.base_url}/data/", timeout=10)  # another family: not delayed
    fast = time.monotonic() - started
    assert slow >= 0.38
    assert fast < slow - 0.2


def test_the_next_two_requests_fail(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    headers = bearer(emulator)
    emulator.admin(
        "POST",
        "faults",
        json={
            "id": "two",
            "family": "odata",
            "error_rate": 1,
            "error_status": 503,
            "retry_after": 2,
            "count": 2,
        },
    )
    session = requests.Session()
    responses = [session.get(f"{emulator.base_url}/data/", headers=headers, timeout=10) for _ in range(3)]
    assert [r.status_code for r in responses[:2]] == [503, 503]
    assert responses[2].status_code not in (401, 500, 502, 503, 504)
    first = responses[0]
    assert first.headers["Retry-After"] == "2"
    error = first.json()["error"]
    assert error["code"] == ""
    assert error["message"] == "An error has occurred."
    assert "503" in error["innererror"]["message"]
    rule = emulator.admin("GET", "faults")["rules"][0]
    assert (rule["matched"], rule["count"]) == (2, 0)
    log = emulator.admin("GET", "requests?family=odata")["requests"]
    assert [entry["fault"] for entry in log] == ["two", "two", None]


@pytest.mark.parametrize("status", [500, 502, 504])
def test_error_statuses_without_a_token(clean_emulator: EmulatorInfo, status: int) -> None:
    """Faults come before authentication: a gateway error needs no valid token."""
    clean_emulator.admin(
        "POST", "faults", json={"family": "services", "error_rate": 1, "error_status": status}
    )
    response = requests.post(f"{clean_emulator.base_url}/api/services/G/S/O", json={}, timeout=10)
    assert response.status_code == status
    assert response.json()["error"]["innererror"]["message"]


def test_seeded_error_rate_is_reproducible(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator

    def run() -> list[int]:
        emulator.admin("PUT", "faults", json={"rules": [{"family": "token", "error_rate": 0.5, "seed": 11}]})
        with requests.Session() as session:
            return [session.get(discovery_url(emulator), timeout=10).status_code for _ in range(20)]

    first = run()
    assert first == run()
    assert set(first) == {200, 503}


def test_method_filter(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin(
        "POST", "faults", json={"family": "token", "method": "POST", "error_rate": 1, "error_status": 500}
    )
    assert requests.get(discovery_url(emulator), timeout=10).status_code == 200
    response = requests.post(emulator.token_url, data={}, verify=emulator.ca_file, timeout=10)
    assert response.status_code == 500
    assert response.json()["error"] == "temporarily_unavailable"  # shaped like Entra


def test_drop_before_response(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin("POST", "faults", json={"family": "odata", "drop_rate": 1, "count": 1})
    session = requests.Session()
    with pytest.raises(requests.exceptions.ConnectionError):
        session.get(f"{emulator.base_url}/data/", headers=bearer(emulator), timeout=10)
    assert session.get(f"{emulator.base_url}/data/", timeout=10).status_code == 401  # next one answered
    # The dropped exchange is logged when the server has finished dropping it, which may be just after the
    # client already saw the connection close: read the log until both entries are there (bounded).
    deadline = time.monotonic() + 10
    while True:
        log = emulator.admin("GET", "requests?family=odata")["requests"]  # in completion order
        if len(log) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sorted((entry["status"], entry["dropped"]) for entry in log) == [
        (0, "before_response"),
        (401, None),
    ]


@pytest.mark.parametrize("tls", [False, True])
def test_drop_mid_body(clean_emulator: EmulatorInfo, tls: bool) -> None:
    emulator = clean_emulator
    emulator.admin(
        "POST", "faults", json={"family": "token", "drop_rate": 1, "drop_mode": "mid_body", "count": 1}
    )
    url = discovery_url(emulator, emulator.tls_url if tls else None)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url, verify=emulator.ca_file, timeout=10)
    emulator.admin(
        "POST", "faults", json={"family": "token", "drop_rate": 1, "drop_mode": "mid_body", "count": 1}
    )
    with requests.get(url, verify=emulator.ca_file, timeout=10, stream=True) as streamed:
        assert streamed.status_code == 200  # status and headers arrive intact
        declared = int(streamed.headers["Content-Length"])
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            streamed.content  # noqa: B018 - reading the body is the point
    assert declared > 0
    assert requests.get(url, verify=emulator.ca_file, timeout=10).status_code == 200
    entry = emulator.admin("GET", "requests?family=token")["requests"][0]
    assert entry["status"] == 200
    assert entry["dropped"] == "mid_body"


def test_drop_before_response_over_tls(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin("POST", "faults", json={"family": "token", "drop_rate": 1, "count": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(discovery_url(emulator, emulator.tls_url), verify=emulator.ca_file, timeout=10)


def test_admin_api_is_never_faulted(clean_emulator: EmulatorInfo) -> None:
    emulator = clean_emulator
    emulator.admin("POST", "faults", json={"family": "all", "error_rate": 1})
    assert emulator.admin("GET", "limits")["requests"]["enabled"] is False
    assert requests.get(discovery_url(emulator), timeout=10).status_code == 503
    counters = emulator.admin("GET", "counters")
    assert counters["faults"]["error"] == 1
    assert counters["families"]["token"] == {"503": 1}
