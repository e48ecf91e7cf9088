"""The custom services every emulator starts with: Microsoft's UserSessionService plus EMULATOR SAMPLES.

``UserSessionService/AifUserSessionService`` is a real F&O service group (ref §6 [S8], [S26]); its contract
(``UserSessionInfo``: AOSLocaleName, AXLanguage, Company, CompanyTimeZone, CurrencyInfo, IsSysAdmin, UserId,
UserPreferredCalendar, UserPreferredTimeZone) follows Microsoft's published WSDL/XSD in [S26]
``ServiceSamples/SoapUtility/Service References/UserSessionServiceReference``.

Everything named ``Emu*`` is an emulator sample, not a Microsoft service: realistic integration services a
customer would write in X++ (an on-hand query with a nested data contract, a journal posting service that
throws X++ errors), so clients can be tested against data-contract parameters, lists and 500 faults.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from emulator.services.registry import DataContract, ServiceCall, ServiceRegistry, XppError

USER_SESSION_GROUP = "UserSessionService"
USER_SESSION_SERVICE = "AifUserSessionService"
INVENTORY_GROUP = "EmuInventoryServices"
INVENTORY_SERVICE = "EmuInventOnHandService"
LEDGER_GROUP = "EmuLedgerServices"
LEDGER_SERVICE = "EmuLedgerJournalService"
CONTACT_GROUP = "EmuIntegrationServices"
CONTACT_SERVICE = "EmuContactService"


@dataclass(frozen=True)
class _CompanyInfo:
    currency: str
    currency_name: str
    time_zone: int  # X++ Timezone enum value (serialised as a number, as Newtonsoft does with enums)
    locale: str
    language: str


# Timezone enum values from Microsoft's UserSessionService XSD: 58 = GMTMINUS0800PACIFICTIME,
# 79 = GMTPLUS0100_AMSTERDAM_BERLIN_BERN_ROME, 35 = GMT_DUBLIN_EDINBURGH_LISBON_LONDON.
_COMPANIES: dict[str, _CompanyInfo] = {
    "usmf": _CompanyInfo("USD", "US Dollar", 58, "en-US", "en-us"),
    "usrt": _CompanyInfo("USD", "US Dollar", 58, "en-US", "en-us"),
    "demf": _CompanyInfo("EUR", "Euro", 79, "de-DE", "de"),
    "gbsi": _CompanyInfo("GBP", "Pound Sterling", 35, "en-GB", "en-gb"),
    "frrt": _CompanyInfo("EUR", "Euro", 79, "fr-FR", "fr"),
}
_DEFAULT_USER = "Admin"  # the F&O user an Entra application is mapped to in Microsoft's samples


def register_samples(registry: ServiceRegistry) -> None:
    """Register every built-in service on ``registry`` (called by ``ServiceRegistry()``)."""
    _register_user_session(registry)
    _register_inventory(registry)
    _LedgerJournals().register(registry)
    _Contacts().register(registry)


# -- UserSessionService (Microsoft) -------------------------------------------------------------------------


def _user_id(call: ServiceCall) -> str:
    """The F&O user the calling app is mapped to (Microsoft Entra applications page, ref §8.2)."""
    return call.principal.user_id if call.principal and call.principal.user_id else _DEFAULT_USER


def _company(call: ServiceCall) -> _CompanyInfo:
    return _COMPANIES.get(call.company, _COMPANIES["usmf"])


def get_user_session_info(call: ServiceCall) -> dict[str, Any]:
    """The caller's session: user, default company and its currency/time zone."""
    info = _company(call)
    return {
        "AOSLocaleName": info.locale,
        "AXLanguage": info.language,
        "Company": call.company,
        "CompanyTimeZone": info.time_zone,
        "CurrencyInfo": {
            "CurrencyCode": info.currency,
            "Description": info.currency_name,
            "ExchangeRate": 100.0,
            "ISOCurrencyCode": info.currency,
            "Prefix": "",
            "Suffix": "",
        },
        "IsSysAdmin": True,
        "UserId": _user_id(call),
        "UserPreferredCalendar": 0,  # Gregorian
        "UserPreferredTimeZone": info.time_zone,
    }


def apply_time_zone(call: ServiceCall) -> datetime:
    """UTC → local wall-clock time, returned without an offset (a bare JSON date string, ref §6).

    UNCONFIRMED: ``timeZoneOffset`` is taken as whole hours; in X++ it may be a Timezone enum value.
    Microsoft's test only checks that the hour changes for ``timeZoneOffset: 3`` [S26 ``JsonTests.cs``].
    """
    utc: datetime = call["dateTime"]
    return (utc + timedelta(hours=call["timeZoneOffset"])).replace(tzinfo=None)


def remove_time_zone(call: ServiceCall) -> datetime:
    """Local wall-clock time → UTC (the inverse of ApplyTimeZone); an offset in the input is ignored."""
    local: datetime = call["dateTime"]
    return local.replace(tzinfo=UTC) - timedelta(hours=call["timeZoneOffset"])


def _register_user_session(registry: ServiceRegistry) -> None:
    group, service = USER_SESSION_GROUP, USER_SESSION_SERVICE
    when = [("dateTime", "utcdatetime"), ("timeZoneOffset", "int")]
    registry.register_contract(
        DataContract(
            "UserSessionInfo",
            {
                "AOSLocaleName": "str",
                "AXLanguage": "str",
                "Company": "str",
                "CompanyTimeZone": "Timezone",
                "CurrencyInfo": "CurrencyInfo",
                "IsSysAdmin": "boolean",
                "UserId": "str",
                "UserPreferredCalendar": "PreferredCalendar",
                "UserPreferredTimeZone": "Timezone",
            },
        )
    )
    add = registry.register
    add(group, service, "GetUserSessionInfo", get_user_session_info, returns="UserSessionInfo")
    add(group, service, "ApplyTimeZone", apply_time_zone, parameters=when, returns="utcdatetime")
    add(group, service, "RemoveTimeZone", remove_time_zone, parameters=when, returns="utcdatetime")
    add(group, service, "GetPartitionKey", lambda call: "initial", returns="str")
    add(group, service, "GetPartitionKeysForUser", lambda call: ["initial"], returns="List<str>")
    add(group, service, "IsSinglePartitionSystem", lambda call: True, returns="boolean")


# -- EmuInventoryServices (emulator sample) -----------------------------------------------------------------

# item → (product name, unit); item numbers match the emulator's OData demo products.
_ITEMS: dict[str, tuple[str, str]] = {
    "D0001": ("MidRangeSpeaker2", "ea"),
    "D0002": ("Cabinet", "ea"),
    "D0003": ("Standard Speaker", "ea"),
    "D0004": ("High End Speaker", "ea"),
    "T0001": ("Speaker cable 10", "ea"),
    "M0001": ("Speaker enclosure", "ea"),
    "M0002": ("Tweeter", "ea"),
    "P0001": ("Acoustic foam panel", "pcs"),
}
_WAREHOUSES: dict[str, tuple[tuple[str, str], ...]] = {
    "usmf": (("1", "11"), ("1", "13"), ("2", "21")),
    "usrt": (("1", "11"),),
    "demf": (("1", "11"), ("2", "21")),
    "gbsi": (("1", "11"),),
    "frrt": (),
}


def _on_hand(company: str) -> list[dict[str, Any]]:
    """Deterministic on-hand rows per company (some zero, so IncludeZeroQuantities matters)."""
    rows = []
    for w, (site, warehouse) in enumerate(_WAREHOUSES.get(company, ())):
        for i, (item, (name, unit)) in enumerate(sorted(_ITEMS.items())):
            physical = float(((i + 3) * (w + 2) * 7) % 180) if (i + w) % 4 else 0.0
            reserved = float(int(physical * 0.15))
            rows.append(
                {
                    "ItemId": item,
                    "ProductName": name,
                    "SiteId": site,
                    "WarehouseId": warehouse,
                    "Unit": unit,
                    "PhysicalInventory": physical,
                    "ReservedPhysical": reserved,
                    "AvailablePhysical": physical - reserved,
                }
            )
    return rows


def get_on_hand(call: ServiceCall) -> dict[str, Any]:
    """On-hand per item/site/warehouse in the caller's company, filtered by the nested ``_request``."""
    request: dict[str, Any] | None = call["_request"]
    if request is None:
        raise XppError("The request must be specified.")
    item_ids = [i.strip().upper() for i in request["ItemIds"] or [] if i and i.strip()]
    if not item_ids:
        raise XppError("At least one item number must be specified.")
    for item in item_ids:
        if item not in _ITEMS:
            raise XppError(f"Item number {item} does not exist in company {call.company}.")
    dims = request["Dimensions"] or {}
    site, warehouse = (dims.get("SiteId") or "").strip(), (dims.get("WarehouseId") or "").strip()
    lines = [
        row
        for row in _on_hand(call.company)
        if row["ItemId"] in item_ids
        and (not site or row["SiteId"] == site)
        and (not warehouse or row["WarehouseId"] == warehouse)
        and (request["IncludeZeroQuantities"] or row["PhysicalInventory"] != 0)
    ]
    return {"Company": call.company, "QueriedAt": datetime.now(UTC), "Lines": lines}


def _register_inventory(registry: ServiceRegistry) -> None:
    registry.register_contract(DataContract("EmuInventDimFilter", {"SiteId": "str", "WarehouseId": "str"}))
    registry.register_contract(
        DataContract(
            "EmuInventOnHandRequest",
            {"ItemIds": "List<str>", "Dimensions": "EmuInventDimFilter", "IncludeZeroQuantities": "boolean"},
        )
    )
    registry.register_contract(
        DataContract(
            "EmuInventOnHandLine",
            {
                "ItemId": "str",
                "ProductName": "str",
                "SiteId": "str",
                "WarehouseId": "str",
                "Unit": "str",
                "PhysicalInventory": "real",
                "ReservedPhysical": "real",
                "AvailablePhysical": "real",
            },
        )
    )
    registry.register_contract(
        DataContract(
            "EmuInventOnHandResponse",
            {"Company": "str", "QueriedAt": "utcdatetime", "Lines": "List<EmuInventOnHandLine>"},
        )
    )
    registry.register(
        INVENTORY_GROUP,
        INVENTORY_SERVICE,
        "getOnHand",
        get_on_hand,
        parameters=[("_request", "EmuInventOnHandRequest")],
        returns="EmuInventOnHandResponse",
    )


# -- EmuLedgerServices (emulator sample) --------------------------------------------------------------------

_JOURNAL_NAMES = {"genjrn": "GenJrn", "accruals": "Accruals", "alloc": "Alloc"}
_MAIN_ACCOUNTS = {"110110", "110180", "130100", "140200", "200110", "401100", "403100", "600100", "606300"}


class _LedgerJournals:
    """Posted general journals per company; ``reset`` forgets them and restarts the number sequences."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._journals: dict[tuple[str, str], dict[str, Any]] = {}
        self._next = 1

    def reset(self) -> None:
        with self._lock:
            self._journals.clear()
            self._next = 1

    def register(self, registry: ServiceRegistry) -> None:
        registry.register_contract(
            DataContract(
                "EmuLedgerJournalLine",
                {"AccountDisplayValue": "str", "Debit": "real", "Credit": "real", "Text": "str"},
            )
        )
        registry.register_contract(
            DataContract(
                "EmuLedgerJournalRequest",
                {
                    "JournalName": "str",
                    "Description": "str",
                    "TransDate": "date",
                    "Lines": "List<EmuLedgerJournalLine>",
                },
            )
        )
        registry.register_contract(
            DataContract(
                "EmuLedgerJournalResult",
                {
                    "JournalNum": "str",
                    "Voucher": "str",
                    "Company": "str",
                    "TransDate": "date",
                    "LineCount": "int",
                    "TotalDebit": "real",
                    "Posted": "boolean",
                },
            )
        )
        request = [("_request", "EmuLedgerJournalRequest")]
        result = "EmuLedgerJournalResult"
        add, group, service = registry.register, LEDGER_GROUP, LEDGER_SERVICE
        add(group, service, "validateJournal", self.validate, parameters=request)  # a void operation
        add(group, service, "postJournal", self.post, parameters=request, returns=result)
        add(group, service, "getJournal", self.get, parameters=[("_journalNum", "str")], returns=result)
        registry.on_reset(self.reset)

    def validate(self, call: ServiceCall) -> None:
        """A void operation: returns nothing, or raises the X++ error posting would raise."""
        with self._lock:
            voucher = f"GNJL{self._next:06d}"  # the voucher posting would use next
        self._check(call, voucher)

    def _check(self, call: ServiceCall, voucher: str) -> tuple[str, date, list[dict[str, Any]], float]:
        """Check the journal the way posting would; raises the X++ errors a real posting raises."""
        request: dict[str, Any] | None = call["_request"]
        if request is None:
            raise XppError("The journal must be specified.")
        name = _JOURNAL_NAMES.get(request["JournalName"].strip().lower())
        if name is None:
            raise XppError(f"Journal name {request['JournalName']} does not exist.")
        trans_date: date | None = request["TransDate"]
        if trans_date is None:
            raise XppError("Field 'Date' must be filled in.")
        lines: list[dict[str, Any]] = request["Lines"] or []
        if not lines:
            raise XppError("There are no journal lines to post.")
        debit = credit = 0.0
        for number, line in enumerate(lines, start=1):
            if line is None:
                raise XppError(f"Line {number} of the journal is empty.")
            main_account = line["AccountDisplayValue"].split("-")[0].strip()
            if main_account not in _MAIN_ACCOUNTS:
                raise XppError(
                    f"The value '{line['AccountDisplayValue']}' in field 'Account' is not found in the "
                    "related table 'Main accounts'."
                )
            if line["Debit"] < 0 or line["Credit"] < 0 or (line["Debit"] > 0) == (line["Credit"] > 0):
                raise XppError(f"Line {number}: enter either a debit or a credit amount, not both.")
            debit += line["Debit"]
            credit += line["Credit"]
        difference = round(debit - credit, 2)
        if difference:
            raise XppError(
                f"The transactions on voucher {voucher} do not balance as per "
                f"{trans_date.month}/{trans_date.day}/{trans_date.year}. (accounting currency: "
                f"{difference:.2f} - reporting currency: {difference:.2f})"
            )
        return name, trans_date, lines, round(debit, 2)

    def post(self, call: ServiceCall) -> dict[str, Any]:
        with self._lock:
            number = self._next
            voucher = f"GNJL{number:06d}"
            _, trans_date, lines, total = self._check(call, voucher)
            self._next += 1
            result: dict[str, Any] = {
                "JournalNum": f"{number:06d}",
                "Voucher": voucher,
                "Company": call.company,
                "TransDate": trans_date,
                "LineCount": len(lines),
                "TotalDebit": total,
                "Posted": True,
            }
            self._journals[(call.company, result["JournalNum"])] = result
            return dict(result)

    def get(self, call: ServiceCall) -> dict[str, Any]:
        journal_num = call["_journalNum"].strip()
        with self._lock:
            found = self._journals.get((call.company, journal_num))
        if found is None:
            raise XppError(f"Journal {journal_num} does not exist.")
        return dict(found)


# -- EmuIntegrationServices (emulator sample) ---------------------------------------------------------------


class _Contacts:
    """A record-accepting integration service: contacts upserted one at a time or as a list, per company.

    ``upsertContact`` throws the X++ error for a bad record (HTTP 500, like D365); ``upsertContacts`` answers
    one result per record (``Outcome`` created/updated/unchanged, or ``Error``) and stores the good ones.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._contacts: dict[tuple[str, str], dict[str, Any]] = {}

    def reset(self) -> None:
        with self._lock:
            self._contacts.clear()

    def register(self, registry: ServiceRegistry) -> None:
        members = {"ContactId": "str", "Name": "str", "Email": "str", "Priority": "int"}
        registry.register_contract(DataContract("EmuContact", members))
        registry.register_contract(
            DataContract("EmuContactResult", {"ContactId": "str", "Outcome": "str", "Error": "str"})
        )
        add, group, service = registry.register, CONTACT_GROUP, CONTACT_SERVICE
        one, many = [("_contact", "EmuContact")], [("_contacts", "List<EmuContact>")]
        add(group, service, "upsertContact", self.upsert_one, parameters=one, returns="EmuContactResult")
        results = "List<EmuContactResult>"
        add(group, service, "upsertContacts", self.upsert_many, parameters=many, returns=results)
        add(group, service, "getContact", self.get, parameters=[("_contactId", "str")], returns="EmuContact")
        registry.on_reset(self.reset)

    def _upsert(self, company: str, contact: dict[str, Any] | None) -> dict[str, Any]:
        if contact is None:
            raise XppError("The contact must be specified.")
        contact_id = (contact["ContactId"] or "").strip().upper()
        if not contact_id:
            raise XppError("Field 'Contact ID' must be filled in.")
        if not contact["Name"]:
            raise XppError(f"Field 'Name' must be filled in for contact {contact_id}.")
        email = contact["Email"] or ""
        if email and "@" not in email:
            raise XppError(f"The e-mail address '{email}' of contact {contact_id} is not valid.")
        if not 0 <= (contact["Priority"] or 0) <= 5:
            raise XppError(f"Priority {contact['Priority']} of contact {contact_id} must be from 0 to 5.")
        stored = {**contact, "ContactId": contact_id}
        with self._lock:
            before = self._contacts.get((company, contact_id))
            self._contacts[(company, contact_id)] = stored
        outcome = "created" if before is None else "unchanged" if before == stored else "updated"
        return {"ContactId": contact_id, "Outcome": outcome, "Error": ""}

    def upsert_one(self, call: ServiceCall) -> dict[str, Any]:
        return self._upsert(call.company, call["_contact"])

    def upsert_many(self, call: ServiceCall) -> list[dict[str, Any]]:
        results = []
        for contact in call["_contacts"] or []:
            try:
                results.append(self._upsert(call.company, contact))
            except XppError as exc:
                contact_id = (contact or {}).get("ContactId") or ""
                results.append({"ContactId": contact_id, "Outcome": "failed", "Error": exc.xpp_message})
        return results

    def get(self, call: ServiceCall) -> dict[str, Any]:
        contact_id = call["_contactId"].strip().upper()
        with self._lock:
            found = self._contacts.get((call.company, contact_id))
        if found is None:
            raise XppError(f"Contact {contact_id} does not exist.")
        return dict(found)
