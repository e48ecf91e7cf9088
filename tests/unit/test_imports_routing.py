"""Routing of inbound blob names (longest prefix, legal entity from folder or file-name token) and the
deterministic names and ids of imports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.pipelines.imports import layout
from shared.pipelines.imports.routing import InputKind, RoutingError, resolve
from shared.pipelines.imports.settings import Route

ROUTES = (
    Route(name="sales", prefix="sales/", target="package", definition_group="G", legal_entity="usmf"),
    Route(name="orders", prefix="sales/orders/", target="package", definition_group="G2",
          legal_entity_from="folder"),
    Route(name="token", prefix="drop/", target="recurring", activity_id="a", legal_entity_from="file_name",
          file_name_separator="_", file_name_token=1, legal_entity="dflt"),
    Route(name="pkgonly", prefix="pkg/", target="package", definition_group="G", accept="package"),
)  # fmt: skip


def test_the_longest_prefix_wins_and_the_file_name_is_the_last_segment() -> None:
    match = resolve(ROUTES, "sales/2024/q1/Orders Q1.CSV")
    assert (match.route.name, match.legal_entity, match.file_name, match.kind) == (
        "sales", "usmf", "Orders Q1.CSV", InputKind.RAW,
    )  # fmt: skip
    nested = resolve(ROUTES, "sales/orders/USRT/o.zip")
    assert (nested.route.name, nested.legal_entity, nested.kind) == ("orders", "usrt", InputKind.ZIP)


@pytest.mark.parametrize(
    ("name", "legal_entity"),
    [("drop/ORDERS_demf_2024.csv", "demf"), ("drop/ORDERS.csv", "dflt"), ("drop/a_B2_c.xml", "b2")],
)
def test_legal_entity_from_a_file_name_token_or_the_default(name: str, legal_entity: str) -> None:
    assert resolve(ROUTES, name).legal_entity == legal_entity


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("elsewhere/a.csv", "unknown_route"),
        ("sales/orders/a.csv", "legal_entity_missing"),
        ("sales/orders/us-mf/a.csv", "legal_entity_invalid"),
        ("sales/orders/usmf/deeper/a.csv", "legal_entity_missing"),
        ("drop/x_toolongentity1_y.csv", "legal_entity_invalid"),
        ("sales/report.pdf", "unsupported_file_type"),
        ("sales/folder/", "invalid_file_name"),
        ("pkg/data.csv", "unsupported_file_type"),
    ],
)
def test_unroutable_names_have_a_reason(name: str, reason: str) -> None:
    with pytest.raises(RoutingError) as caught:
        resolve(ROUTES, name)
    assert caught.value.reason_code == reason
    assert caught.value.message


def test_ids_and_names_are_deterministic_and_safe() -> None:
    sha = "ab" * 32
    assert layout.job_id("sales", sha) == "sales-_-abababababababab"  # "_": the caller's default company
    assert layout.job_id("sales", sha, 3) == "sales-_-abababababababab-r3"
    # the company is part of the execution id: the same file for two companies is two D365 jobs
    usmf = layout.job_id("sales", sha, legal_entity="usmf")
    assert usmf == "sales-usmf-abababababababab" != layout.job_id("sales", sha, legal_entity="usrt")
    # one-to-one: a route named like another route plus a company never gets the same id
    assert layout.job_id("sales-usmf", sha) != usmf
    assert layout.job_route(usmf) == "sales"
    assert layout.job_route(layout.job_id("sales-usmf", sha, 2)) == "sales-usmf"
    assert layout.job_route("sales-abababababababab-r2") == "sales"  # ids of older versions
    assert layout.job_route("not a job") is None
    longest = layout.job_id("r" * 40, sha, 999, legal_entity="c" * 10)
    assert len(longest) <= 73  # shorter than the "{project}-{timestamp}-{guid}" ids Microsoft's RIS uses
    one = layout.drop_id("inbound", "a.csv", '"0x8D1"')
    assert one == layout.drop_id("inbound", "a.csv", "0x8D1") != layout.drop_id("inbound", "a.csv", "0x8D2")
    name = layout.ledger_name("package|sales orders/eu|usmf", sha)
    assert name.startswith("ledger/package-sales-orders-eu-usmf-")
    assert name.endswith(f"/{sha}.json")
    assert layout.ledger_name("a|b", sha) != layout.ledger_name("a b", sha)  # no collision after cleaning
    when = datetime(2026, 3, 4, 23, 30, tzinfo=UTC)
    final = layout.final_name("sales", when, "sales-ab", "o.csv")
    assert final == "sales/2026/03/04/sales-ab/o.csv"
    assert layout.error_file_name(final, "Customers V3.target-error-keys.csv") == (
        "sales/2026/03/04/sales-ab/d365/Customers_V3.target-error-keys.csv"
    )
    assert layout.external_id("Ordres été.csv", sha) == "Ordres %C3%A9t%C3%A9.csv#abababababab"
    assert layout.external_id("a\r\nb.csv", sha).isprintable()
