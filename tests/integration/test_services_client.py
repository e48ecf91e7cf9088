"""CustomServiceClient: wire shapes over a scripted loopback server, then the real emulator's services."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shared.d365.errors import D365Error, D365NotFoundError, D365ServerError, D365ThrottledError
from shared.d365.retry import RetryPolicy
from shared.d365.services import CustomServiceClient, OperationDescription, Parameter
from shared.d365.transport import D365Transport
from tests.support.d365 import faults, limits, logged, make_transport
from tests.support.scripted_server import Reply, ScriptedServer
from tests.support.stack import EmulatorInfo

FAST = RetryPolicy(backoff_base=0.01, backoff_max=0.05)


class StaticTokens:
    def get_token(self) -> str:
        return "tok"

    def invalidate(self) -> None:
        return None


@pytest.fixture
def scripted() -> Iterator[tuple[ScriptedServer, CustomServiceClient]]:
    with ScriptedServer() as server:
        transport = D365Transport(server.url, StaticTokens(), policy=FAST, sleep=lambda s: None)
        yield server, CustomServiceClient(transport)
        transport.close()


# --- wire shapes (scripted server) ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["2024-05-01T10:00:00", 42, 1.5, None, True, [1, "a"], {"Company": "usmf"}])
def test_return_values_come_back_as_is(scripted, value) -> None:
    server, client = scripted
    server.add(Reply.json(value))
    assert client.call("G", "S", "Op", {"a": 1}) == value
    (sent,) = server.requests
    assert (sent.method, sent.route) == ("POST", "/api/services/G/S/Op")
    assert json.loads(sent.body) == {"a": 1}
    assert sent.headers["content-type"].startswith("application/json")


def test_no_payload_sends_an_empty_body(scripted) -> None:
    server, client = scripted
    server.add(Reply(200))
    assert client.call("UserSessionService", "AifUserSessionService", "GetUserSessionInfo") is None
    (sent,) = server.requests
    assert sent.body == b""
    assert sent.headers["content-length"] == "0"


def test_path_segments_are_quoted_and_checked(scripted) -> None:
    server, client = scripted
    server.add(Reply.json(1))
    client.call("My Group", "Srv%", "Op")
    assert server.requests[0].path == "/api/services/My%20Group/Srv%25/Op"
    for bad in ("", " ", "a/b", "..", "x?y", "a#b", "tab\tname"):
        with pytest.raises(ValueError):
            client.call(bad, "S", "Op")


@pytest.mark.parametrize(
    "body",
    [
        {"Message": "Journal name Nope does not exist.", "ExceptionType": "ErrorException"},
        {
            "error": {
                "code": "",
                "message": "An error has occurred.",
                "innererror": {"message": "Journal name Nope does not exist.", "type": "X"},
            }
        },
    ],
)
def test_500_carries_d365s_message_in_either_shape(scripted, body) -> None:
    server, client = scripted
    server.add(Reply.json(body, 500), Reply.json("posted twice"))
    with pytest.raises(D365ServerError, match="Journal name Nope does not exist"):
        client.call("G", "S", "post", {"x": 1})
    assert len(server.requests) == 1  # not idempotent: a 500 is never repeated


def test_idempotent_call_is_retried_after_a_5xx(scripted) -> None:
    server, client = scripted
    server.add(Reply(503), Reply.json("ok"))
    assert client.call("G", "S", "get", idempotent=True) == "ok"
    assert len(server.requests) == 2


def test_dropped_connection_on_a_call_is_not_retried(scripted) -> None:
    server, client = scripted
    server.add(Reply(drop="before_response"), Reply.json("twice"))
    with pytest.raises(D365Error):
        client.call("G", "S", "post", {})
    assert len(server.requests) == 1


def test_429_on_a_call_is_retried(scripted) -> None:
    server, client = scripted
    server.add(Reply(429, {"Retry-After": "1"}), Reply.json("once"))
    assert client.call("G", "S", "post", {}) == "once"
    assert len(server.requests) == 2


def test_non_json_success_is_an_error(scripted) -> None:
    server, client = scripted
    server.add(Reply(200, {"Content-Type": "text/html"}, b"<html>sign in</html>"))
    with pytest.raises(D365Error, match="not JSON"):
        client.call("G", "S", "Op")


def test_listings_are_tolerant(scripted) -> None:
    server, client = scripted
    server.add(
        Reply.json({"ServiceGroups": [{"Name": "A"}, {"name": "B"}, "C", {"Other": 1}]}),
        Reply.json({"value": [{"Name": "S1"}]}),
        Reply.json(["Op1", "Op2"]),
        Reply.json(
            {
                "parameters": [{"Name": "_request", "Type": "Req"}, {"Name": "x"}],
                "Return": {"Name": "return", "Type": "Resp"},
            }
        ),
    )
    assert client.list_groups() == ["A", "B", "C"]
    assert client.list_services("A") == ["S1"]
    assert client.list_operations("A", "S1") == ["Op1", "Op2"]
    described = client.describe("A", "S1", "Op1")
    assert described.parameters == (Parameter("_request", "Req"), Parameter("x", None))
    assert described.return_type == "Resp"
    assert [r.method for r in server.requests] == ["GET"] * 4
    assert server.requests[3].route == "/api/services/A/S1/Op1"


# --- the real emulator ---------------------------------------------------------------------------------


@pytest.fixture
def client(clean_emulator: EmulatorInfo) -> Iterator[CustomServiceClient]:
    transport = make_transport(clean_emulator)
    yield CustomServiceClient(transport)
    transport.close()


LEDGER = ("EmuLedgerServices", "EmuLedgerJournalService")
JOURNAL = {
    "_request": {
        "JournalName": "GenJrn",
        "Description": "transport test",
        "TransDate": "2024-05-01",
        "Lines": [
            {"AccountDisplayValue": "110110", "Debit": 100.0, "Credit": 0.0, "Text": "a"},
            {"AccountDisplayValue": "401100", "Debit": 0.0, "Credit": 100.0, "Text": "b"},
        ],
    }
}


def test_emulator_session_info_and_bare_values(client) -> None:
    info = client.call("UserSessionService", "AifUserSessionService", "GetUserSessionInfo")
    assert info["Company"].lower() == "usmf"
    assert client.call("UserSessionService", "AifUserSessionService", "GetPartitionKey") == "initial"
    assert client.call("UserSessionService", "AifUserSessionService", "IsSinglePartitionSystem") is True


def test_emulator_listings(client) -> None:
    assert "UserSessionService" in client.list_groups()
    assert "AifUserSessionService" in client.list_services("UserSessionService")
    assert "GetUserSessionInfo" in client.list_operations("UserSessionService", "AifUserSessionService")
    described = client.describe(*LEDGER, "postJournal")
    assert isinstance(described, OperationDescription)
    assert [p.name for p in described.parameters] == ["_request"]
    assert described.return_type == "EmuLedgerJournalResult"


def test_emulator_void_operation_returns_none(client) -> None:
    assert client.call(*LEDGER, "validateJournal", JOURNAL) is None


def test_emulator_500_carries_the_xpp_message(client) -> None:
    bad = {"_request": {**JOURNAL["_request"], "JournalName": "Nope"}}
    with pytest.raises(D365ServerError) as caught:
        client.call(*LEDGER, "postJournal", bad)
    assert caught.value.status_code == 500
    assert "Journal name Nope does not exist." in caught.value.message


def test_emulator_unknown_service_is_not_found(client) -> None:
    with pytest.raises(D365NotFoundError, match="NoSuchService"):
        client.call("UserSessionService", "NoSuchService", "Op")


def test_emulator_throttled_post_is_posted_exactly_once(clean_emulator: EmulatorInfo) -> None:
    limits(clean_emulator, resource={"next_requests": 2, "retry_after_seconds": 1})
    sleeps: list[float] = []  # resource pressure counts requests, not time: no need to really wait
    transport = make_transport(clean_emulator, policy=RetryPolicy(), sleep=sleeps.append)
    client = CustomServiceClient(transport)
    first = client.call(*LEDGER, "postJournal", JOURNAL)
    second = client.call(*LEDGER, "postJournal", JOURNAL)
    assert int(second["JournalNum"]) == int(first["JournalNum"]) + 1  # the 429s posted nothing
    path = "/api/services/EmuLedgerServices/EmuLedgerJournalService/postJournal"
    assert [r["status"] for r in logged(clean_emulator, path)] == [429, 429, 200, 200]
    assert sleeps[:2] == [1.0, 1.0]
    # the fake sleep does not move the clock, so the second call still finds the transport's throttle
    # gate closed and waits out what is left of the announced second instead of drawing another 429
    assert len(sleeps) <= 3
    assert all(0 < extra <= 1.0 for extra in sleeps[2:])
    transport.close()


def test_emulator_503_on_a_post_is_not_retried(clean_emulator: EmulatorInfo, client) -> None:
    faults(clean_emulator, {"family": "services", "error_rate": 1.0, "error_status": 503, "count": 1})
    with pytest.raises(D365ServerError):
        client.call(*LEDGER, "postJournal", JOURNAL)
    posted = client.call(*LEDGER, "postJournal", JOURNAL)
    assert posted["JournalNum"] == "000001"  # the faulted call never reached the service


def test_emulator_throttling_past_the_deadline_raises_throttled(clean_emulator: EmulatorInfo) -> None:
    limits(clean_emulator, resource={"next_requests": 5, "retry_after_seconds": 30})
    transport = make_transport(clean_emulator, policy=RetryPolicy(total_timeout=10))
    with pytest.raises(D365ThrottledError) as caught:
        CustomServiceClient(transport).call(*LEDGER, "postJournal", JOURNAL)
    assert caught.value.retry_after == 30.0
    transport.close()
