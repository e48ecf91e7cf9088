"""JSON custom services of the emulator (``/api/services``) over real HTTP with an emulator-issued token."""

from __future__ import annotations

import asyncio
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import requests
from starlette.applications import Starlette

from emulator.services import ServiceCall, ServiceRegistry, XppError, routes
from shared.d365.errors import parse_error_body
from tests.support.d365 import bearer_token
from tests.support.stack import EmulatorInfo

SESSION = "api/services/UserSessionService/AifUserSessionService"
ON_HAND = "api/services/EmuInventoryServices/EmuInventOnHandService/getOnHand"
LEDGER = "api/services/EmuLedgerServices/EmuLedgerJournalService"


@pytest.fixture(scope="module")
def d365(emulator: EmulatorInfo) -> requests.Session:
    """A session carrying a client-credentials token for the D365 environment (scope ``{base}/.default``)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {bearer_token(emulator)}"
    return session


def _post(d365: requests.Session, emulator: EmulatorInfo, path: str, body: Any = None) -> requests.Response:
    if body is None:
        return d365.post(f"{emulator.base_url}/{path}", data=b"", timeout=30)
    if isinstance(body, bytes):
        return d365.post(f"{emulator.base_url}/{path}", data=body, timeout=30)
    return d365.post(f"{emulator.base_url}/{path}", json=body, timeout=30)


def _fault(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 500, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"Message", "ExceptionType", "ActivityId"}
    return body


def test_services_need_a_token(emulator: EmulatorInfo) -> None:
    response = requests.post(f"{emulator.base_url}/{SESSION}/GetUserSessionInfo", data=b"", timeout=30)
    assert response.status_code == 401


def test_get_user_session_info(d365: requests.Session, emulator: EmulatorInfo) -> None:
    response = _post(d365, emulator, f"{SESSION}/GetUserSessionInfo")  # Content-Length: 0, as in [S26]
    assert response.status_code == 200
    info = response.json()
    assert info["$id"] == "1"
    assert info["Company"] == emulator.default_company
    assert info["UserId"]
    assert info["CurrencyInfo"]["CurrencyCode"] == "USD"
    assert info["CurrencyInfo"]["$id"] == "2"
    assert isinstance(info["CompanyTimeZone"], int)
    assert {"AOSLocaleName", "AXLanguage", "IsSysAdmin", "UserPreferredCalendar"} <= set(info)


def test_apply_time_zone_returns_a_bare_date_string(d365: requests.Session, emulator: EmulatorInfo) -> None:
    response = _post(
        d365, emulator, f"{SESSION}/ApplyTimeZone", {"dateTime": "2024-05-01T10:15:00Z", "timeZoneOffset": 3}
    )
    assert response.status_code == 200
    value = response.json()
    assert isinstance(value, str)  # not wrapped in {"value": ...} (ref §6)
    assert datetime.fromisoformat(value).hour == 13
    again = _post(
        d365, emulator, f"{SESSION}/RemoveTimeZone", {"dateTime": value, "timeZoneOffset": 3}
    ).json()
    assert again == "2024-05-01T10:15:00Z"


def test_routes_are_case_insensitive(d365: requests.Session, emulator: EmulatorInfo) -> None:
    response = _post(d365, emulator, "api/services/usersessionservice/aifusersessionservice/getpartitionkey")
    assert response.json() == "initial"


def test_listings(d365: requests.Session, emulator: EmulatorInfo) -> None:
    base = f"{emulator.base_url}/api/services"
    groups = d365.get(base, timeout=30).json()["ServiceGroups"]
    assert {"Name": "UserSessionService"} in groups
    services = d365.get(f"{base}/UserSessionService", timeout=30).json()["Services"]
    assert services == [{"Name": "AifUserSessionService"}]
    operations = d365.get(f"{base}/UserSessionService/AifUserSessionService", timeout=30).json()["Operations"]
    assert {"Name": "GetUserSessionInfo"} in operations
    assert {"Name": "ApplyTimeZone"} in operations
    detail = d365.get(f"{base}/UserSessionService/AifUserSessionService/ApplyTimeZone", timeout=30).json()
    assert detail == {
        "Parameters": [
            {"Name": "dateTime", "Type": "utcdatetime"},
            {"Name": "timeZoneOffset", "Type": "int"},
        ],
        "Return": {"Name": "return", "Type": "utcdatetime"},
    }
    on_hand = d365.get(f"{emulator.base_url}/{ON_HAND}", timeout=30).json()
    assert on_hand["Parameters"] == [{"Name": "_request", "Type": "EmuInventOnHandRequest"}]


@pytest.mark.parametrize(
    "path",
    [
        "api/services/NoSuchGroup",
        "api/services/UserSessionService/NoSuchService",
        f"{SESSION}/NoSuchOperation",
    ],
)
def test_unknown_names_are_404(d365: requests.Session, emulator: EmulatorInfo, path: str) -> None:
    response = d365.get(f"{emulator.base_url}/{path}", timeout=30)
    assert response.status_code == 404
    assert "No HTTP resource was found" in response.json()["Message"]
    if path.count("/") == 4:
        assert _post(d365, emulator, path).status_code == 404


def test_on_hand_with_a_nested_data_contract(d365: requests.Session, emulator: EmulatorInfo) -> None:
    request = {"ItemIds": ["D0001", "m0002"], "Dimensions": {"SiteId": "1", "WarehouseId": "11"}}
    response = _post(d365, emulator, ON_HAND, {"_request": request})
    assert response.status_code == 200
    body = response.json()
    assert body["Company"] == emulator.default_company
    lines = body["Lines"]
    assert lines
    assert {line["ItemId"] for line in lines} <= {"D0001", "M0002"}
    assert all(line["WarehouseId"] == "11" for line in lines)
    for line in lines:
        assert line["AvailablePhysical"] == line["PhysicalInventory"] - line["ReservedPhysical"]
    everything = _post(
        d365, emulator, ON_HAND, {"_request": {"ItemIds": ["D0001"], "IncludeZeroQuantities": True}}
    ).json()
    assert len(everything["Lines"]) >= len([line for line in lines if line["ItemId"] == "D0001"])


def test_xpp_error_is_a_500_with_the_infolog_text(d365: requests.Session, emulator: EmulatorInfo) -> None:
    fault = _fault(_post(d365, emulator, ON_HAND, {"_request": {"ItemIds": ["NOPE1"]}}))
    assert fault["Message"] == (
        f"An exception occured when invoking the operation - Item number NOPE1 does not exist in company "
        f"{emulator.default_company}."
    )
    assert fault["ExceptionType"] == "ErrorException"
    _, message, _, _ = parse_error_body(_post(d365, emulator, ON_HAND, {"_request": {}}).text)
    assert "At least one item number must be specified." in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "Parameter '_request' is not found within the request content body."),
        ({"_request": {"ItemIds": ["D0001"]}, "extra": 1}, "Parameter 'extra' is not a parameter"),
        (b"{not json", "Unexpected character encountered while parsing"),
        (b"[1, 2]", "must be a JSON object"),
        ({"_request": {"ItemIds": "D0001"}}, "Error converting value \"D0001\" to type 'List<str>'"),
        ({"_request": {"IncludeZeroQuantities": "maybe", "ItemIds": ["D0001"]}}, "to type 'boolean'"),
    ],
)
def test_binding_failures_are_500(
    d365: requests.Session, emulator: EmulatorInfo, body: Any, expected: str
) -> None:
    assert expected in _fault(_post(d365, emulator, ON_HAND, body))["Message"]


def test_journal_posting_and_its_errors(d365: requests.Session, emulator: EmulatorInfo) -> None:
    journal = {
        "JournalName": "GenJrn",
        "Description": "Accrual",
        "TransDate": "2024-05-31",
        "Lines": [
            {"AccountDisplayValue": "606300-001", "Debit": 125.5, "Text": "Rent"},
            {"AccountDisplayValue": "200110", "Credit": 125.5, "Text": "Rent"},
        ],
    }
    validated = _post(d365, emulator, f"{LEDGER}/validateJournal", {"_request": journal})
    assert validated.status_code == 200
    assert validated.content == b""  # a void operation
    posted = _post(d365, emulator, f"{LEDGER}/postJournal", {"_request": journal}).json()
    assert posted["Posted"] is True
    assert posted["TotalDebit"] == 125.5
    assert posted["TransDate"] == "2024-05-31T00:00:00"
    fetched = _post(d365, emulator, f"{LEDGER}/getJournal", {"_journalNum": posted["JournalNum"]}).json()
    assert fetched["Voucher"] == posted["Voucher"]

    unbalanced = {**journal, "Lines": [{"AccountDisplayValue": "606300", "Debit": 10}]}
    fault = _fault(_post(d365, emulator, f"{LEDGER}/postJournal", {"_request": unbalanced}))
    assert "do not balance as per 5/31/2024. (accounting currency: 10.00" in fault["Message"]
    bad_account = {**journal, "Lines": [{"AccountDisplayValue": "999999", "Debit": 10}]}
    fault = _fault(_post(d365, emulator, f"{LEDGER}/postJournal", {"_request": bad_account}))
    assert "not found in the related table 'Main accounts'" in fault["Message"]
    missing = _fault(_post(d365, emulator, f"{LEDGER}/getJournal", {"_journalNum": "NOPE"}))
    assert missing["Message"].endswith("Journal NOPE does not exist.")


# -- registering more services from code (in-process) --------------------------------------------------------


def test_register_a_service_from_code() -> None:
    registry = ServiceRegistry(samples=False)

    def add(call: ServiceCall) -> dict[str, Any]:
        if call["b"] == 0:
            raise XppError("b must not be zero.")
        return {"Sum": call["a"] + call["b"], "Company": call.company}

    params = [("a", "int"), ("b", "int")]
    registry.register("MyGroup", "MyService", "add", add, parameters=params, returns="Res")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("MyGroup", "MyService", "add", add)
    state = SimpleNamespace(services=registry, config=SimpleNamespace(default_company="DEMF"))
    app = Starlette(routes=routes(state))

    async def exercise() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as http:
            assert (await http.get("/api/services")).json() == {"ServiceGroups": [{"Name": "MyGroup"}]}
            answer = await http.post("/api/services/MyGroup/MyService/add", json={"a": 2, "b": "3"})
            assert answer.json() == {"$id": "1", "Sum": 5, "Company": "demf"}
            fault = await http.post("/api/services/MyGroup/MyService/add", json={"a": 2, "b": 0})
            assert fault.status_code == 500
            assert fault.json()["Message"].endswith("b must not be zero.")

    asyncio.run(exercise())
