"""Fault rules, request-log redaction and path families of the emulator (pure pieces)."""

from __future__ import annotations

import pytest

from emulator.faults import FaultInjector, FaultRule
from emulator.middleware import classify
from emulator.requestlog import RequestLog, RequestRecord, redact_query


def test_count_based_rule_applies_to_the_next_n_matches_only() -> None:
    faults = FaultInjector()
    faults.add({"family": "odata", "error_rate": 1, "error_status": 503, "retry_after": 2, "count": 2})
    decisions = [faults.decide("odata", "GET", "/data/CustomersV3") for _ in range(3)]
    assert [d.action if d else None for d in decisions] == ["error", "error", None]
    first = decisions[0]
    assert first is not None
    assert first.status == 503
    assert first.retry_after == 2
    assert faults.rules()[0].matched == 2
    assert faults.rules()[0].count == 0


def test_filters_family_method_and_path() -> None:
    faults = FaultInjector()
    faults.add({"family": "odata", "method": "post", "path_prefix": "/data/Sales", "error_rate": 1})
    assert faults.decide("services", "POST", "/data/SalesOrderHeaders") is None
    assert faults.decide("odata", "GET", "/data/SalesOrderHeaders") is None
    assert faults.decide("odata", "POST", "/data/CustomersV3") is None
    decision = faults.decide("odata", "POST", "/data/SalesOrderHeaders")
    assert decision is not None
    assert decision.action == "error"


def test_admin_is_never_faulted() -> None:
    faults = FaultInjector()
    faults.add({"family": "all", "error_rate": 1})
    assert faults.decide("admin", "GET", "/_emulator/") is None
    assert faults.decide("token", "POST", "/t/oauth2/v2.0/token") is not None


def test_seeded_rates_are_reproducible() -> None:
    def pattern() -> list[str]:
        faults = FaultInjector()
        faults.add({"error_rate": 0.5, "seed": 7})
        return [
            (d.action if d else "none") for d in (faults.decide("odata", "GET", "/data") for _ in range(40))
        ]

    first = pattern()
    assert first == pattern()
    assert 5 < first.count("error") < 35


def test_latency_only_and_drop_modes() -> None:
    faults = FaultInjector()
    faults.add({"id": "slow", "latency_ms": 250, "count": 1})
    faults.add({"id": "cut", "drop_rate": 1, "drop_mode": "mid_body"})
    slow = faults.decide("odata", "GET", "/data")
    assert slow is not None
    assert slow.action == "none"
    assert slow.latency_seconds == 0.25
    cut = faults.decide("odata", "GET", "/data")
    assert cut is not None
    assert cut.action == "drop"
    assert cut.drop_mode == "mid_body"
    assert cut.rule_id == "cut"
    assert faults.remove("cut")
    assert faults.decide("odata", "GET", "/data") is None


@pytest.mark.parametrize(
    "body",
    [
        {"family": "admin"},
        {"error_rate": 2},
        {"error_status": 200},
        {"drop_mode": "sideways"},
        {"latency_ms": -1},
        {"count": -1},
        {"colour": "red"},
    ],
)
def test_invalid_rules_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FaultRule.from_json(body)


def test_query_redaction() -> None:
    redacted = redact_query(
        b"client_secret=abc&sig=xyz&%24filter=Name%20eq%20%27a%27&code=1&cross-company=true"
    )
    assert "abc" not in redacted
    assert "xyz" not in redacted
    assert redacted.count("REDACTED") == 3
    assert "%24filter=Name%20eq%20%27a%27" in redacted  # untouched parameters stay as sent
    assert "cross-company=true" in redacted


def test_request_log_filters_and_counters() -> None:
    log = RequestLog(capacity=3)
    for i, (family, status) in enumerate([("odata", 200), ("token", 200), ("odata", 429), ("odata", 0)]):
        log.add(
            RequestRecord(
                seq=i,
                time=0.0,
                method="GET",
                path="/data",
                query="",
                family=family,
                status=status,
                duration_ms=1.0,
            )
        )
    assert [r["seq"] for r in log.records()] == [1, 2, 3]  # bounded ring, oldest first
    assert [r["seq"] for r in log.records(family="odata", limit=1)] == [3]
    assert log.counters()["families"] == {"odata": {"200": 1, "429": 1, "dropped": 1}, "token": {"200": 1}}
    log.clear()
    assert log.counters()["total"] == 0


@pytest.mark.parametrize(
    ("path", "family"),
    [
        ("/data", "odata"),
        ("/data/CustomersV3", "odata"),
        ("/database", "other"),
        ("/api/services/UserSessionService/AifUserSessionService/GetUserSessionInfo", "services"),
        ("/api/connector/enqueue/abc", "connector"),
        ("/Metadata/DataEntities", "metadata"),
        ("/metadata/Labels(Id='x')", "metadata"),
        ("/metadata/identity/oauth2/token", "token"),
        ("/tenant/oauth2/v2.0/token", "token"),
        ("/tenant/v2.0/.well-known/openid-configuration", "token"),
        ("/secrets/name", "keyvault"),
        ("/_emulator/limits", "admin"),
        ("/", "other"),
    ],
)
def test_classify(path: str, family: str) -> None:
    assert classify(path) == family
