"""Real-time populate flows (docs/populate.md): records written to a D365 entity one by one through
OData ``$batch``, each with its own result. A small file dropped for an ``odata`` import route ends beside
its status record, finished by the blob trigger alone (no monitor); a JSON batch posted to the HTTP
function ``POST /api/populate/{target}`` with its function key is answered with the results.

Both write customer groups (``CustomerGroups``): the route and the target are picked by what they write, not
by name. Keys carry a token of the run, so every run creates new groups; ``DEMO-RT`` is the demo's own group
that the file changes on every run (created first when D365 does not have it). The file shows the app's own
refusals (a value that is no enum symbol, a record naming another legal entity than the route's); the HTTP
flow shows D365's (a legal entity the caller asks for and D365 does not have).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from demo.imports import final_record, progress
from demo.inputs import DEFAULT_COMPANY, pick_http_target, pick_populate_route, records_file
from demo.report import FlowResult
from demo.target import FlowFailed, Stack, eventually
from shared.d365.errors import D365Error, D365NotFoundError
from shared.d365.odata_query import entity_path
from shared.pipelines.imports.settings import ImportSettings
from shared.populate.results import RecordOutcome
from shared.populate.settings import PopulateSettings
from shared.status import STATUS_SUFFIX, Outcome

__all__ = ["ENTITY_SET", "KEPT_GROUP", "UNKNOWN_COMPANY", "http_populate_flow", "realtime_file_flow"]

ENTITY_SET = "CustomerGroups"
KEPT_GROUP = "DEMO-RT"  # the demo's own customer group; the file changes its description on every run
UNKNOWN_COMPANY = "zzzz"  # a legal entity D365 does not have: it refuses the record with its own message
FILE_OUTCOMES = ["created", "updated", "failed", "failed"]
HTTP_FUNCTION = "populate_records"


def run_token(stamp: str) -> str:
    """The run's stamp in 6 characters (base 36 of its epoch seconds): key fields hold 10 characters."""
    seconds = int(datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp())
    digits = ""
    while seconds:
        seconds, digit = divmod(seconds, 36)
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[digit] + digits
    return digits or "0"


def _key_text(key: dict[str, Any]) -> str:
    """``usmf/DEMO-RT``: the legal entity first, empty parts left out (a record refused before it was read
    may have none)."""
    ordered = sorted(key.items(), key=lambda item: item[0] != "dataAreaId")
    return "/".join(str(value) for _, value in ordered if value not in (None, ""))


def _short(message: str, length: int = 100) -> str:
    text = " ".join(message.split())
    return text if len(text) <= length else text[: length - 3] + "..."


def _counts(counts: dict[str, int]) -> str:
    """``1 created, 1 updated, 2 failed``, in the order of RecordOutcome."""
    return ", ".join(f"{counts[o]} {o}" for o in RecordOutcome if counts.get(o)) or "no results"


def _results(records: list[dict[str, Any]]) -> list[str]:
    """One summary line per record result: position, key, outcome and the message of a failure."""
    lines = []
    for result in records:
        line = (
            f"  record {result.get('record')} {_key_text(result.get('key') or {})}: {result.get('outcome')}"
        )
        if result.get("error"):
            line += f": {result['error']}"
        lines.append(line)
    return lines


def _group(
    group: str, description: str, terms: str, sales_tax: str | None = None, company: str | None = None
) -> dict[str, Any]:
    """A customer group record; without ``company`` it goes to the legal entity of the route or target."""
    record: dict[str, Any] = {} if company is None else {"dataAreaId": company}
    record |= {"CustomerGroupId": group, "Description": description, "PaymentTermId": terms}
    return record if sales_tax is None else {**record, "IsSalesTaxIncludedInPrice": sales_tax}


def _ensure_kept_group(stack: Stack, company: str) -> bool:
    """``DEMO-RT`` exists in ``company`` (so the file updates it); True when it had to be created first."""
    key = {"dataAreaId": company, "CustomerGroupId": KEPT_GROUP}
    try:
        stack.odata.get(ENTITY_SET, key, cross_company=True)
        return False
    except D365NotFoundError:
        pass
    except D365Error as exc:
        raise FlowFailed(f"could not read {KEPT_GROUP} ({company}) through OData: {exc}") from None
    try:
        values = {
            **key,
            "Description": "The demo's group: changed by every real-time file",
            "PaymentTermId": "Net30",
        }
        stack.odata.create(ENTITY_SET, values)
    except D365Error as exc:
        raise FlowFailed(f"could not create {KEPT_GROUP} ({company}) through OData: {exc}") from None
    return True


def realtime_file_flow(stack: Stack, stamp: str, *, timeout: float) -> FlowResult:
    """Drop four customer groups for the ``odata`` route: one new, one changed (``DEMO-RT``), one whose
    sales-tax flag is not a ``NoYes`` value (the app's type check refuses it), one whose ``dataAreaId``
    names another legal entity than the route's (the app refuses it: a file for one company never writes
    to another); passes when the file ends in errors as ``partially_succeeded`` with the results created,
    updated, failed, failed and the app's reason on the last two."""
    settings = stack.settings.section(ImportSettings)
    route = pick_populate_route(settings, ENTITY_SET)
    if route is None or route.populate is None or route.populate.entity is None:
        raise FlowFailed(f"IMPORT_ROUTES has no 'odata' route writing to {ENTITY_SET}")
    target = route.populate.entity
    if target.mode != "upsert" or target.all_or_nothing:
        raise FlowFailed(
            f"route {route.name!r} writes {ENTITY_SET} with mode {target.mode!r}"
            f"{' all or nothing' if target.all_or_nothing else ''}: the demo needs 'upsert' record by record "
            "to show new, changed and refused records in one file"
        )
    company = route.legal_entity or DEFAULT_COMPANY
    created_first = _ensure_kept_group(stack, company)
    token = run_token(stamp)
    records = [
        _group(f"RF{token}A", f"New in real time (run {stamp})", "Net30", "No"),
        _group(KEPT_GROUP, f"Changed in real time (run {stamp})", "Net45", "No"),
        _group(f"RF{token}B", "A sales-tax flag that is no NoYes", "Net30", "Maybe"),
        _group(f"RF{token}C", "For another legal entity than the route's", "Net30", "No", UNKNOWN_COMPANY),
    ]
    item = records_file(route, "demo-realtime-customer-groups", stamp, records)
    inbound = settings.inbound_container
    stack.store.blob(inbound, item.name).upload_blob(item.data, overwrite=True)
    dropped = f"{inbound}/{item.name}"
    try:
        container, stored, record = eventually(
            stack,
            lambda: final_record(stack, settings, item, monitor=False),
            timeout=timeout,
            what=f"{dropped} archived or failed",
            pause=0.5,
        )
    except FlowFailed as exc:
        raise FlowFailed(f"{exc}; {progress(stack, settings, item)}") from None
    populate = record.get("details", {}).get("populate") or {}
    results: list[dict[str, Any]] = list(populate.get("records") or [])
    outcomes = [str(r.get("outcome")) for r in results]
    counts = _counts(populate.get("counts") or {})
    headline = (
        f"{dropped} -> {len(records)} records upserted one by one into {ENTITY_SET} through OData $batch "
        f"(route {route.name!r}) -> {container}, {record['outcome']}: {counts}"
    )
    problems = []
    if record["outcome"] != Outcome.PARTIALLY_SUCCEEDED:
        problems.append(
            f"expected {Outcome.PARTIALLY_SUCCEEDED}, got {record['outcome']}: {record.get('message')}"
        )
    elif outcomes != FILE_OUTCOMES:
        problems.append(f"record results {', '.join(outcomes)}; expected {', '.join(FILE_OUTCOMES)}")
    elif f"writes to legal entity {company!r} only" not in str(results[-1].get("error", "")):
        problems.append(
            f"record {len(results)} was not refused for its legal entity: {results[-1].get('error')}"
        )
    if problems:
        headline += ": " + "; ".join(problems)
    else:
        checked, refused = (_short(str(r.get("error"))) for r in results[2:4])
        headline += (
            f": record 3 {checked!r} (the app's type check), record 4 {refused!r} (the route's legal entity)"
        )
    where = [f"{container}/{stored}  (+ {STATUS_SUFFIX}: every record's key, outcome and message)"]
    where += _results(results)
    if created_first:
        where.append(
            f"  ({KEPT_GROUP} did not exist in {company}: the demo created it first, for the file to change)"
        )
    return FlowResult("real-time file populate", not problems, headline, where)


def _post(
    url: str, key: str, params: dict[str, str], body: list[dict[str, Any]], timeout: float
) -> tuple[int, dict[str, Any]]:
    try:
        response = requests.post(
            url, params=params, json=body, headers={"x-functions-key": key}, timeout=timeout
        )
    except requests.RequestException as exc:
        raise FlowFailed(f"POST {urlsplit(url).path}: no answer ({type(exc).__name__})") from None
    if response.status_code not in (200, 207):
        raise FlowFailed(
            f"POST {urlsplit(url).path} answered HTTP {response.status_code}: {response.text[:400]}"
        )
    return response.status_code, dict(response.json())


def http_populate_flow(stack: Stack, stamp: str, *, timeout: float) -> FlowResult:
    """Post two new customer groups to the HTTP function (function key); passes when the answer says
    ``created`` for both, both read back through OData as sent, the same request again answers
    ``unchanged`` for both (a repeat is safe), and (for a target that takes ``?legal_entity=``) a group
    posted for a legal entity D365 does not have comes back ``failed`` with D365's own message."""
    target = pick_http_target(stack.settings.section(PopulateSettings), ENTITY_SET)
    if target is None:
        raise FlowFailed(f"POPULATE_HTTP_TARGETS has no target that creates records in {ENTITY_SET}")
    company = target.legal_entity or DEFAULT_COMPANY
    params = {"legal_entity": company} if target.legal_entity_from_request else {}
    token = run_token(stamp)
    records = [
        _group(f"RH{token}1", f"Created over HTTP (run {stamp})", "Net30"),
        _group(f"RH{token}2", f"Created over HTTP, taxed (run {stamp})", "Net10", "yes"),
    ]
    if not target.legal_entity and not target.legal_entity_from_request:
        records = [{**r, "dataAreaId": company} for r in records]
    url = stack.function_url(HTTP_FUNCTION).replace("{target}", target.name)
    key = stack.target.functions.key_for(HTTP_FUNCTION)
    wait = max(5.0, min(timeout, 60.0))
    status, answer = _post(url, key, params, records, wait)
    call = f"POST {urlsplit(url).path}{'?legal_entity=' + company if params else ''} with the function key"
    results: list[dict[str, Any]] = list(answer.get("records") or [])
    headline = (
        f"{call}: {len(records)} records -> HTTP {status}, {_counts(answer.get('counts') or {})} in "
        f"{answer.get('target', ENTITY_SET)} ({answer.get('mode', target.entity.mode)})"
    )
    where = ["the HTTP answer, one result per record:", *_results(results)]
    if status != 200 or [r.get("outcome") for r in results] != ["created"] * len(records):
        headline += f": expected HTTP 200 and {len(records)} created: {answer.get('message')}"
        return FlowResult("HTTP populate", False, headline, where)
    found = (_read_back(stack, r.get("key") or {}, sent) for sent, r in zip(records, results, strict=True))
    problems = [problem for problem in found if problem]
    headline += f"; {len(records) - len(problems)} of {len(records)} read back through OData as sent"
    again_status, again = _post(url, key, params, records, wait)
    again_outcomes = [r.get("outcome") for r in again.get("records") or []]
    headline += f"; the same request again -> HTTP {again_status}, {_counts(again.get('counts') or {})}"
    if again_status != 200 or again_outcomes != ["unchanged"] * len(records):
        problems.append(f"sent again, expected {len(records)} unchanged: {again.get('message')}")
    else:
        headline += " (a repeat is safe)"
    if target.legal_entity_from_request:
        refused, problem = _refused_by_d365(url, key, token, stamp, wait)
        headline += refused
        problems += [problem] if problem else []
    if problems:
        headline += ": " + "; ".join(problems[:3])
    where += [f"D365: {entity_path(ENTITY_SET, r['key'])}" for r in results if r.get("key")]
    return FlowResult("HTTP populate", not problems, headline, where)


def _refused_by_d365(url: str, key: str, token: str, stamp: str, wait: float) -> tuple[str, str | None]:
    """One group posted for a legal entity D365 does not have: (headline part, problem or None)."""
    record = _group(f"RH{token}3", f"For a legal entity D365 does not have (run {stamp})", "Net30")
    status, answer = _post(url, key, {"legal_entity": UNKNOWN_COMPANY}, [record], wait)
    results = list(answer.get("records") or [{}])
    error = str(results[0].get("error") or "")
    said = f"; for ?legal_entity={UNKNOWN_COMPANY} -> HTTP {status}, {results[0].get('outcome')}"
    if status != 207 or results[0].get("outcome") != "failed" or not error.startswith("HTTP 4"):
        return said, f"expected D365 to refuse {UNKNOWN_COMPANY}: {answer.get('message')}"
    return f"{said}: {_short(error)!r} (D365's message)", None


def _read_back(stack: Stack, key: dict[str, Any], sent: dict[str, Any]) -> str | None:
    """None when D365 has the record as ``sent`` (its description); else what was found instead."""
    try:
        row = stack.odata.get(ENTITY_SET, key, cross_company=True)
    except D365NotFoundError:
        return f"{_key_text(key)} is not in D365"
    except D365Error as exc:
        return f"{_key_text(key)} could not be read back: {exc}"
    if row.get("Description") != sent["Description"]:
        return f"{_key_text(key)} reads back as {row.get('Description')!r}"
    return None
