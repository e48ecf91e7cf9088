"""Export settings: defaults, the JSON activity/job lists, and every mistake reported by its setting name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.pipelines.exports.settings import DmfExportJob, ExportActivity, ExportSettings, MiB
from shared.settings import ConfigurationError, Settings

BASE = {
    "D365_BASE_URL": "https://contoso.operations.dynamics.com",
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
}
GUID = "5acd8121-d4e1-4cf8-b31f-9713de3e3627"
OTHER = "6acd8121-d4e1-4cf8-b31f-9713de3e3627"


def read(**env: Any) -> ExportSettings:
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in env.items()}
    return Settings.from_env({**BASE, **values}).section(ExportSettings)


def problems(**env: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as caught:
        read(**env)
    return list(caught.value.problems)


def test_defaults_fit_inside_the_function_timeout() -> None:
    settings = read()
    assert settings.container == "exports"
    assert settings.state_container == "state"
    assert settings.activities == ()
    assert settings.dmf_jobs == ()
    assert settings.run_max_seconds == 480  # host.json functionTimeout is 10 minutes
    assert settings.run_max_bytes == 10240 * MiB
    assert settings.run_max_messages == 500
    assert settings.dmf_poll_seconds == 15
    assert settings.dmf_give_up_hours == 24


def test_activities_and_jobs_are_parsed() -> None:
    settings = read(
        EXPORT_ACTIVITIES=[
            {"name": "sales-orders", "activity_id": GUID, "unpack": True, "manifest": True},
            {
                "name": "vendors",
                "activity_id": "{" + GUID.replace("5", "6").upper() + "}",
                "extension": ".CSV",
            },
        ],
        DMF_EXPORTS={"name": "customers", "definition_group": "Customer export", "legal_entity": "usmf"},
        EXPORT_RUN_MAX_SECONDS="60",
        EXPORT_RUN_MAX_MB="5",
        EXPORTS_CONTAINER="my-exports",
    )
    assert settings.activities[0] == ExportActivity("sales-orders", GUID, unpack=True, manifest=True)
    vendors = settings.activity("vendors")
    assert vendors.extension == "csv"
    assert vendors.key == OTHER  # braces dropped, lower case: the state/lock key
    assert settings.dmf_jobs == (
        DmfExportJob("customers", "Customer export", "usmf", package_name="customers", period_minutes=1440),
    )
    assert settings.run_max_seconds == 60
    assert settings.run_max_bytes == 5 * MiB
    assert settings.container == "my-exports"
    with pytest.raises(KeyError, match="no export activity named 'x'"):
        settings.activity("x")


def test_mistakes_are_reported_by_setting_and_entry() -> None:
    found = problems(
        EXPORT_ACTIVITIES=[
            {"name": "../up", "activity_id": GUID},
            {"name": "ok", "activity_id": GUID, "unpak": True},
            {"name": "dup", "activity_id": "not a guid!"},
        ],
        DMF_EXPORTS=[{"name": "x", "definition_group": "", "period_minutes": 2}],
        EXPORTS_CONTAINER="Bad_Name",
        EXPORT_RUN_MAX_SECONDS="0",
    )
    text = "\n".join(found)
    assert "EXPORT_ACTIVITIES[0]: name '../up' must be" in text
    assert "EXPORT_ACTIVITIES[1]: unknown key(s) unpak" in text
    assert "EXPORT_ACTIVITIES[2]: activity_id 'not a guid!' is not a recurring data job ID" in text
    assert "DMF_EXPORTS[0]: " in text
    assert "EXPORTS_CONTAINER: 'Bad_Name' is not a container name" in text
    assert "EXPORT_RUN_MAX_SECONDS: '0' is not valid" in text


def test_the_same_activity_twice_is_refused() -> None:
    found = problems(
        EXPORT_ACTIVITIES=[{"name": "a", "activity_id": GUID}, {"name": "b", "activity_id": GUID.upper()}]
    )
    assert any("configured twice" in p for p in found)


def test_json_that_is_not_a_list_of_objects_is_refused() -> None:
    assert problems(EXPORT_ACTIVITIES="[1, 2]") == ["EXPORT_ACTIVITIES: expected a JSON list of objects"]
    assert problems(DMF_EXPORTS="{oops")[0].startswith("DMF_EXPORTS: is not valid JSON")


def test_a_single_object_counts_as_a_list_of_one() -> None:
    settings = read(EXPORT_ACTIVITIES={"name": "one", "activity_id": GUID})
    assert [a.name for a in settings.activities] == ["one"]
