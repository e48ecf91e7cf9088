"""Every setting the app reads is documented in docs/configuration.md and present in the sample settings.

The names are not scraped from the source: every settings section in ``shared/`` is read against the
sample settings through an environment that records each name asked for, so settings read through
helpers, constants or computed names (``AzureWebJobsStorage__clientId``) are caught too.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import shared
from runner import load_local_settings
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
# Read by the Functions host (binding expressions, worker selection), not by the app's settings classes.
HOST_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "AzureWebJobsFeatureFlags",
    "IMPORT_MONITOR_SCHEDULE",
    "EXPORT_DEQUEUE_SCHEDULE",
    "DMF_EXPORT_SCHEDULE",
    "BUSINESS_EVENTS_BLOB_SOURCE",  # read when the blueprint is indexed (the trigger's source)
    "IMPORT_BLOB_SOURCE",
    "IDENTITY_ENDPOINT",  # set by the platform; read by azure-identity
    "IDENTITY_HEADER",
}


class RecordingEnv(Mapping[str, str]):
    def __init__(self, values: Mapping[str, str]) -> None:
        self.data = dict(values)
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self.data[name]

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.asked.add(name)
        return name in self.data

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


def section_classes() -> list[type]:
    found: set[type] = set()
    for info in pkgutil.walk_packages(shared.__path__, "shared."):
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and callable(getattr(value, "from_reader", None))
                and value.__module__ == module.__name__
            ):
                found.add(value)
    return sorted(found, key=lambda cls: cls.__qualname__)


def sample_values() -> dict[str, str]:
    return load_local_settings(ROOT / "local.settings.sample.json", root=ROOT).values


def asked_names() -> set[str]:
    # The sample's CA bundle is written by the running local stack; the names asked do not depend on it.
    env = RecordingEnv({**sample_values(), "TLS_CA_BUNDLE": ""})
    Settings.from_env(env, sections=section_classes())
    return env.asked


def test_every_feature_section_is_found() -> None:
    names = {cls.__name__ for cls in section_classes()}
    assert {"ImportSettings", "ExportSettings", "BusinessEventSettings", "PopulateSettings"} <= names


def test_every_setting_read_is_documented() -> None:
    undocumented = sorted(name for name in asked_names() if f"`{name}`" not in DOC)
    assert not undocumented, f"add these to docs/configuration.md: {undocumented}"


def test_every_setting_read_is_in_the_sample_or_optional() -> None:
    # Alternatives and optional secrets the local stack does not use are documented but not in the sample.
    optional = {
        name
        for name in asked_names()
        if name.startswith(("D365_CLIENT_CERTIFICATE", "AzureWebJobsStorage__"))
    }
    optional |= {"KEY_VAULT_REFERENCE_CLIENT_ID", "BUSINESS_EVENTS_SHARED_SECRET", "D365_AUTHORITY_HOST"}
    missing = sorted(name for name in asked_names() - optional if name not in sample_values())
    assert not missing, f"add these to local.settings.sample.json: {missing}"


def test_every_sample_setting_is_read_by_the_app_or_the_host() -> None:
    stray = sorted(set(sample_values()) - asked_names() - HOST_SETTINGS)
    assert not stray, f"local.settings.sample.json has settings nothing reads: {stray}"
    for name in HOST_SETTINGS:
        assert f"`{name}`" in DOC, name
