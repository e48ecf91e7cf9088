"""Package-API route end to end against Azurite + the emulator: raw files packaged while streamed, ready
packages (Microsoft's own, UTF-16 XML), bundles of several entities, legal entity from the path, error
detail, re-drops."""

from __future__ import annotations

import io
import json
import time
import zipfile
from pathlib import Path
from typing import Any

from tests.integration.test_imports_stack import (
    PACKAGE_ROUTE,
    ImportStack,
    csv_text,
    customer_groups_csv,
    make_stack,
)

__all__ = ["make_stack"]  # the fixture, re-exported for pytest


# A package route for Customers V3 whose rows D365 checks (foreign keys, types): the row-error scenarios.
CUSTOMERS_ROUTE: dict[str, Any] = {
    "name": "customers",
    "target": "package",
    "definition_group": "Imports-Customers",
    "overwrite": True,
    "legal_entity": "usmf",
    "entities": [{"entity": "Customers V3", "file_pattern": "*.csv"}],
}


def groups_in(stack: ImportStack, company: str, prefix: str) -> dict[str, str]:
    rows = stack.odata(
        "CustomerGroups",
        **{
            "cross-company": "true",
            "$filter": f"dataAreaId eq '{company}' and CustomerGroupId eq '{prefix}*'",
        },
    )
    return {r["CustomerGroupId"]: r["Description"] for r in rows}


def test_raw_csv_is_packaged_imported_monitored_and_archived(make_stack) -> None:
    stack: ImportStack = make_stack([PACKAGE_ROUTE])
    stack.drop("groups/new groups.csv", customer_groups_csv("1", "2", "3", prefix="PK"))
    report = stack.run("groups/new groups.csv")
    assert report.outcome == "sent", report
    assert report.job_id is not None
    assert report.sha256 is not None
    assert report.job_id == f"groups-usmf-{report.sha256[:16]}"
    assert report.execution_id == report.job_id  # the deterministic id is D365's execution id
    assert stack.names(stack.settings.inbound_container) == []
    assert stack.jobs() == [f"jobs/{report.job_id}.json"]
    inflight = f"inflight/{report.job_id}/new groups.csv"
    assert stack.names(stack.settings.state_container, "inflight/") == [inflight, f"{inflight}.status.json"]
    assert stack.record(f"{stack.settings.state_container}/{inflight}")["outcome"] == "sent"

    assert stack.until_finished(report.job_id) == "succeeded"
    assert groups_in(stack, "usmf", "PK") == {"PK1": "Group 1", "PK2": "Group 2", "PK3": "Group 3"}
    archived = stack.names(stack.settings.archive_container)
    day_folder = archived[0].rsplit("/", 2)[0]
    assert archived == [
        f"{day_folder}/{report.job_id}/new groups.csv",
        f"{day_folder}/{report.job_id}/new groups.csv.status.json",
    ]
    assert day_folder.startswith("groups/20")
    stored = f"{stack.settings.archive_container}/{day_folder}/{report.job_id}/new groups.csv"
    assert stack.read(stack.settings.archive_container, stored.partition("/")[2]) == customer_groups_csv(
        "1", "2", "3", prefix="PK"
    )
    record = stack.record(stored)
    assert record["outcome"] == "succeeded"
    assert record["correlation"]["execution_id"] == report.job_id
    assert record["correlation"]["file"] == "new groups.csv"
    assert record["d365"]["status"] == "Succeeded"
    assert [h["outcome"] for h in record["history"]][:1] == ["sent"]
    assert stack.jobs() == []
    assert [e["state"] for e in stack.ledger()] == ["succeeded"]
    assert stack.names(stack.settings.state_container, "inflight/") == []
    # the package D365 received carries the original file name (InputFilePath) and a generated manifest
    [execution] = stack.executions()
    assert execution["definition_group"] == "Imports-Customer-groups"
    assert execution["legal_entity"] == "usmf"


def test_microsofts_sample_package_with_utf16_xml_imports_as_is(make_stack, samples_dir: Path) -> None:
    route = {
        "name": "assets",
        "target": "package",
        "definition_group": "Asset-Major-Types",
        "overwrite": True,
        "legal_entity": "usmf",
        "accept": "package",
    }
    stack: ImportStack = make_stack([route])
    data = (samples_dir / "packages" / "usmf_asset-major-types-01.zip").read_bytes()
    stack.drop("assets/usmf_asset-major-types-01.zip", data)
    report = stack.run("assets/usmf_asset-major-types-01.zip")
    assert report.outcome == "sent", report
    assert report.job_id is not None
    stack.until_finished(report.job_id)
    rows = stack.odata("FixedAssetMajorTypes")
    assert len(rows) == 11
    [stored] = [n for n in stack.names(stack.settings.archive_container) if n.endswith(".zip")]
    assert stack.read(stack.settings.archive_container, stored) == data  # archived byte for byte


def bundle(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_bundle_of_raw_files_becomes_one_package_with_an_entity_each(make_stack) -> None:
    route = {
        "name": "onboarding",
        "target": "package",
        "definition_group": "Imports-Onboarding",
        "overwrite": True,
        "legal_entity_from": "file_name",
        "file_name_separator": "_",
        "file_name_token": 1,
        "entities": [
            {"entity": "Customer groups", "file_pattern": "groups*.csv", "level": 1},
            {"entity": "Customers V3", "file_pattern": "customers*.csv", "level": 2,
             "field_map": {"Account": "CUSTOMERACCOUNT", "Name": "ORGANIZATIONNAME",
                           "Group": "CUSTOMERGROUPID", "Currency": "SALESCURRENCYCODE"}},
        ],
    }  # fmt: skip
    stack: ImportStack = make_stack([route])
    customers = csv_text(
        [["Account", "Name", "Group", "Currency"], ["BN-1", "Bundle One", "BNG", "USD"]]
    ).encode("utf-8-sig")
    data = bundle({"groups.csv": customer_groups_csv("G", prefix="BN"), "customers.csv": customers})
    stack.drop("onboarding/new_usrt_1.zip", data)
    report = stack.run("onboarding/new_usrt_1.zip")
    assert report.outcome == "sent", report
    assert report.job_id is not None
    stack.until_finished(report.job_id)
    assert groups_in(stack, "usrt", "BN") == {"BNG": "Group G"}
    customer = stack.odata("CustomersV3", **{"cross-company": "true", "$filter": "CustomerAccount eq 'BN-1'"})
    assert [(c["dataAreaId"], c["OrganizationName"]) for c in customer] == [("usrt", "Bundle One")]
    [execution] = stack.executions()
    assert [e["EntityName"] for e in execution["entities"]] == ["Customer groups", "Customers V3"]


def test_legal_entity_from_the_sub_folder_serves_many_companies(make_stack) -> None:
    route = {**PACKAGE_ROUTE, "legal_entity_from": "folder", "legal_entity": ""}
    stack: ImportStack = make_stack([route])
    stack.drop("groups/usrt/a.csv", customer_groups_csv("X", prefix="SF"))
    stack.drop("groups/demf/a.csv", customer_groups_csv("Y", prefix="SF"))
    jobs = [stack.run(name).job_id for name in ("groups/usrt/a.csv", "groups/demf/a.csv")]
    for job in jobs:
        assert job is not None
        stack.until_finished(job)
    assert groups_in(stack, "usrt", "SF") == {"SFX": "Group X"}
    assert groups_in(stack, "demf", "SF") == {"SFY": "Group Y"}


def test_the_same_file_for_two_companies_is_imported_into_each(make_stack) -> None:
    """The ledger key is (target incl. company, content): each company gets its own job and execution id."""
    route = {**PACKAGE_ROUTE, "legal_entity_from": "folder", "legal_entity": ""}
    stack: ImportStack = make_stack([route])
    data = customer_groups_csv("Z", prefix="SAME")
    reports = [stack.run(stack.drop(name, data)) for name in ("groups/usrt/a.csv", "groups/demf/a.csv")]
    assert [r.outcome for r in reports] == ["sent", "sent"], reports
    jobs = [r.job_id for r in reports]
    assert jobs[0] != jobs[1]
    assert sorted(stack.jobs()) == sorted(f"jobs/{job}.json" for job in jobs)
    for job in jobs:
        assert job is not None
        assert stack.until_finished(job) == "succeeded"
    assert sorted(e["legal_entity"] for e in stack.executions()) == ["demf", "usrt"]
    assert groups_in(stack, "usrt", "SAME") == groups_in(stack, "demf", "SAME") == {"SAMEZ": "Group Z"}
    archived = [n for n in stack.names(stack.settings.archive_container) if n.endswith("/a.csv")]
    assert len(archived) == 2  # both inputs kept, none merged into the other's folder


def test_partially_failed_import_lands_in_errors_with_d365_error_detail(make_stack) -> None:
    stack: ImportStack = make_stack([CUSTOMERS_ROUTE])
    rows = [
        ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE", "CREDITLIMIT"],
        ["ER-1", "Good customer", "10", "USD", "100"],
        ["ER-2", "Unknown group", "NOPE", "USD", "100"],  # target error (foreign key)
        ["ER-3", "Bad number", "10", "USD", "ten"],  # staging error (type)
    ]
    stack.drop("customers/mixed.csv", csv_text(rows).encode())
    report = stack.run("customers/mixed.csv")
    assert report.outcome == "sent", report
    assert report.job_id is not None
    assert stack.until_finished(report.job_id) == "partially_succeeded"
    errors = stack.names(stack.settings.errors_container)
    stored = next(n for n in errors if n.endswith("/mixed.csv"))
    record = stack.record(f"{stack.settings.errors_container}/{stored}")
    assert record["outcome"] == "partially_succeeded"
    d365 = record["d365"]
    assert d365["status"] == "PartiallySucceeded"
    assert d365["error_count"] >= 1
    assert any("NOPE" in e["message"] or "group" in e["message"].lower() for e in d365["errors"])
    assert "DMFExecutionSummary" in d365["summary_page_url"]
    assert "sig=" not in json.dumps(record)  # no SAS signature in a record
    folder = stored.rsplit("/", 1)[0]
    assert (
        f"{stack.settings.errors_container}/{folder}/d365/Customers_V3.target-error-keys.csv"
        in (d365["error_files"])
    )
    keys = stack.read(stack.settings.errors_container, f"{folder}/d365/Customers_V3.target-error-keys.csv")
    assert b"ER-2" in keys.replace(b"\x00", b"")
    staging = f"{stack.settings.errors_container}/{folder}/d365/Customers_V3.staging-errors"
    assert any(f.startswith(staging) for f in d365["error_files"]), d365["error_files"]
    assert "detail_errors" not in d365
    assert [e["state"] for e in stack.ledger()] == ["failed"]
    assert [
        r["CustomerAccount"] for r in stack.odata("CustomersV3", **{"$filter": "CustomerAccount eq 'ER-1'"})
    ]


def test_an_identical_redrop_is_skipped_or_reimported_by_route_setting(make_stack) -> None:
    stack: ImportStack = make_stack(
        [PACKAGE_ROUTE, {**PACKAGE_ROUTE, "name": "again", "prefix": "again/", "on_redrop": "reimport",
                         "definition_group": "Imports-Again"}]
    )  # fmt: skip
    data = customer_groups_csv("1", prefix="RD")
    first = stack.run(stack.drop("groups/a.csv", data))
    assert first.job_id is not None
    stack.until_finished(first.job_id)
    skipped = stack.run(stack.drop("groups/copy of a.csv", data))
    assert skipped.outcome == "duplicate"
    assert skipped.stored_as is not None
    assert skipped.stored_as.startswith(stack.settings.archive_container)
    record = stack.record(skipped.stored_as)
    assert record["outcome"] == "duplicate"
    assert record["correlation"]["duplicate_of"] == first.job_id
    assert len(stack.executions()) == 1

    one = stack.run(stack.drop("again/b.csv", data))
    assert one.job_id is not None
    stack.until_finished(one.job_id)
    two = stack.run(stack.drop("again/b.csv", data))  # the same name again: a new blob version
    assert two.outcome == "sent"
    assert two.job_id == f"{one.job_id}-r2"
    stack.until_finished(two.job_id)
    assert len(stack.executions()) == 3
    states = sorted(e["state"] for e in stack.ledger())
    assert states == ["succeeded", "succeeded"]


def test_raw_xml_with_a_field_map_imports_and_a_dtd_is_refused(make_stack) -> None:
    route = {
        "name": "xml",
        "target": "package",
        "definition_group": "Imports-Xml",
        "overwrite": True,
        "legal_entity": "usmf",
        "entities": [{"entity": "Customer groups", "file_pattern": "*.xml",
                      "field_map": {"CUSTOMERGROUPID": "CUSTOMERGROUPID", "DESCRIPTION": "DESCRIPTION"}}],
    }  # fmt: skip
    stack: ImportStack = make_stack([route])
    good = (
        b'<?xml version="1.0" encoding="utf-8"?><Document><CUSTCUSTOMERGROUPENTITY>'
        b"<CUSTOMERGROUPID>XM1</CUSTOMERGROUPID><DESCRIPTION>From XML</DESCRIPTION>"
        b"</CUSTCUSTOMERGROUPENTITY></Document>"
    )
    report = stack.run(stack.drop("xml/groups.xml", good))
    assert report.outcome == "sent", report
    assert report.job_id is not None
    stack.until_finished(report.job_id)
    assert groups_in(stack, "usmf", "XM") == {"XM1": "From XML"}

    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
        b"<Document><CUSTCUSTOMERGROUPENTITY><CUSTOMERGROUPID>&lol2;</CUSTOMERGROUPID>"
        b"</CUSTCUSTOMERGROUPENTITY></Document>"
    )
    refused = stack.run(stack.drop("xml/laughs.xml", laughs))
    assert (refused.outcome, refused.reason_code) == ("rejected", "manifest_unsafe")
    assert len(stack.executions()) == 1


GET_ERRORS = "/data/DataManagementDefinitionGroups/Microsoft.Dynamics.DataEntities.GetExecutionErrors"


def test_error_detail_collection_stops_at_the_monitor_budget_and_resumes(make_stack) -> None:
    from shared.pipelines.imports.monitor import monitor_imports

    stack: ImportStack = make_stack([CUSTOMERS_ROUTE])
    rows = [
        ["CUSTOMERACCOUNT", "ORGANIZATIONNAME", "CUSTOMERGROUPID", "SALESCURRENCYCODE", "CREDITLIMIT"],
        ["EB-1", "Unknown group", "NOPE", "USD", "100"],
    ]
    report = stack.run(stack.drop("customers/budget.csv", csv_text(rows).encode()))
    assert report.job_id is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and stack.executions()[0]["status"] in ("NotRun", "Executing"):
        time.sleep(0.05)
    # the run's clock: the budget is spent once the job's execution errors are fetched, before its entity
    ticks = iter([0.0, 0.0])
    paused = monitor_imports(
        stack.context, settings=stack.settings, sleep=stack.sleep, clock=lambda: next(ticks, 1e9)
    )
    assert paused.budget_exhausted
    assert paused.finished == {}
    assert paused.in_progress == [report.job_id]
    job = json.loads(stack.read(stack.settings.state_container, f"jobs/{report.job_id}.json"))
    assert job["error_detail"]["error_count"] >= 1  # kept for the next run
    assert stack.until_finished(report.job_id) in ("failed", "partially_succeeded")
    stored = next(n for n in stack.names(stack.settings.errors_container) if n.endswith("/budget.csv"))
    d365 = stack.record(f"{stack.settings.errors_container}/{stored}")["d365"]
    assert d365["error_count"] >= 1
    assert any(".target-error-keys." in f for f in d365["error_files"]), d365
    assert not {"entities_done", "errors_fetched"} & set(d365)
    fetched = stack.emulator.admin("GET", "requests", params={"path_prefix": GET_ERRORS, "limit": 100})
    assert len(fetched["requests"]) == 1  # not fetched again by the resumed run
