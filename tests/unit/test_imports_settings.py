"""IMPORT_* settings and the IMPORT_ROUTES schema: defaults, every field, and one message per problem."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.pipelines.imports.settings import EntityConfig, ImportSettings, MiB
from shared.settings_reader import ConfigurationError, SettingsReader


def read(routes: Any = None, **env: str) -> ImportSettings:
    values = dict(env)
    if routes is not None:
        values["IMPORT_ROUTES"] = routes if isinstance(routes, str) else json.dumps(routes)
    reader = SettingsReader(values)
    settings = ImportSettings.from_reader(reader)
    reader.raise_for_problems()
    return settings


def problems(routes: Any = None, **env: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        read(routes, **env)
    return "\n".join(caught.value.problems)


def test_defaults_need_no_setting() -> None:
    settings = read()
    assert (settings.inbound_container, settings.archive_container) == ("inbound", "archive")
    assert (settings.errors_container, settings.state_container) == ("errors", "state")
    assert settings.routes == ()
    assert settings.stuck_after_minutes == 120
    assert settings.serialize == "execution"
    assert settings.limits.max_package_bytes == 2 * 1024**3


def test_a_full_route_reads_every_field() -> None:
    route = {
        "name": "orders",
        "prefix": "sales/orders/",
        "target": "package",
        "definition_group": "Sales orders",
        "execute": False,
        "overwrite": True,
        "legal_entity": "USMF",
        "legal_entity_from": "file_name",
        "file_name_separator": "-",
        "file_name_token": 2,
        "accept": "raw",
        "on_redrop": "reimport",
        "max_file_mb": 5,
        "package_version": "1",
        "entities": [
            {"entity": "Sales order headers V2", "file_pattern": "head*.csv", "source_format": "CSV-Unicode",
             "field_map": {"Order": "SALESORDERNUMBER"}, "encoding": "cp1252", "delimiter": ";",
             "execution_unit": 1, "level": 1, "sequence": 2, "run_business_logic": False},
        ],
    }  # fmt: skip
    [parsed] = read([route], IMPORT_STUCK_AFTER_MINUTES="30", IMPORT_SERIALIZE="call").routes
    assert parsed.prefix == "sales/orders/"
    assert (parsed.execute, parsed.overwrite, parsed.legal_entity) == (False, True, "usmf")
    assert (parsed.legal_entity_from, parsed.file_name_separator, parsed.file_name_token) == (
        "file_name",
        "-",
        2,
    )
    assert (parsed.accept, parsed.on_redrop, parsed.max_file_bytes) == ("raw", "reimport", 5 * MiB)
    assert parsed.entities == (
        EntityConfig(
            entity="Sales order headers V2",
            source_format="CSV-Unicode",
            file_pattern="head*.csv",
            field_map=(("Order", "SALESORDERNUMBER"),),
            encoding="cp1252",
            delimiter=";",
            sequence=2,
            run_business_logic=False,
        ),
    )
    assert parsed.target_key("usmf") == "package|sales orders|usmf"


def test_recurring_defaults_and_the_entity_shortcut() -> None:
    [file_job, package_job] = read(
        [
            {"name": "groups", "target": "recurring", "activity_id": "{ABC-1}", "entity": "Customer groups"},
            {"name": "pkg", "target": "recurring", "activity_id": "abc-2", "accept": "package"},
        ]
    ).routes
    assert (file_job.prefix, file_job.send_as) == ("groups/", "file")
    assert file_job.entities == (EntityConfig(entity="Customer groups"),)
    assert file_job.target_key("usmf") == "recurring|abc-1|usmf|customer groups"
    assert package_job.send_as == "package"
    assert package_job.target_key("") == "recurring|abc-2||package"


def test_one_object_is_accepted_for_one_route() -> None:
    assert (
        read({"name": "a", "target": "recurring", "activity_id": "x-1", "entity": "E"}).routes[0].name == "a"
    )


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"name": "a b", "definition_group": "G", "entity": "E"}, "must be 1-40 letters"),
        ({"name": "a", "definition_group": "G", "entity": "E", "colour": 1}, "unknown key(s) colour"),
        ({"name": "a", "target": "ftp"}, "'target' must be one of recurring, package"),
        ({"name": "a", "target": "recurring", "entity": "E"}, "needs 'activity_id'"),
        ({"name": "a", "target": "recurring", "activity_id": "x", "send_as": "file"}, "send_as 'file' needs"),
        ({"name": "a", "entity": "E"}, "needs 'definition_group'"),
        ({"name": "a", "definition_group": "G"}, "raw files need 'entities'"),
        ({"name": "a", "definition_group": "G", "entity": "E", "prefix": "/x/"}, "must be a folder"),
        ({"name": "a", "definition_group": "G", "entity": "E", "legal_entity": "us-mf"}, "1-10 letters"),
        ({"name": "a", "definition_group": "G", "entity": "E", "execute": "yes"}, "'execute' must be true"),
        ({"name": "a", "definition_group": "G", "entities": [{"entity": "E", "field_map": {}}]}, "field_map"),
        (
            {"name": "a", "definition_group": "G", "entities": [{"entity": "E", "delimiter": ";;"}]},
            "one char",
        ),
        ({"name": "a", "definition_group": "G", "entity": "E", "max_file_mb": 0}, "'max_file_mb' must be"),
    ],
)
def test_each_route_problem_names_the_route_and_the_key(route: dict[str, Any], expected: str) -> None:
    text = problems([route])
    assert "IMPORT_ROUTES[0]" in text
    assert expected in text


def test_duplicates_bad_json_and_bad_scalars_are_all_reported_at_once() -> None:
    route = {"name": "a", "definition_group": "G", "entity": "E"}
    assert "used twice" in problems([route, route])
    text = problems(
        "[{", IMPORT_LEASE_SECONDS="5", IMPORT_SERIALIZE="never", IMPORT_STATE_CONTAINER="No_Good"
    )
    for expected in ("IMPORT_ROUTES: is not valid JSON", "IMPORT_LEASE_SECONDS", "IMPORT_SERIALIZE",
                     "IMPORT_STATE_CONTAINER"):  # fmt: skip
        assert expected in text
    assert "expected a JSON list of objects" in problems("[1, 2]")


def test_entity_for_a_file_and_its_default_format() -> None:
    [route] = read(
        [{"name": "a", "definition_group": "G",
          "entities": [{"entity": "Groups", "file_pattern": "GROUPS*"}, {"entity": "Any"}]}]
    ).routes  # fmt: skip
    groups = route.entity_for("groups-2024.xlsx")
    assert groups is not None
    assert groups.entity == "Groups"
    assert groups.format_for("groups-2024.xlsx") == "EXCEL"
    other = route.entity_for("other.xml")
    assert other is not None
    assert other.entity == "Any"
    assert other.format_for("other.xml") == "XML-Element"
    assert other.format_for("x.csv") == "CSV-Unicode"
