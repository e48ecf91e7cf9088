"""The environment that points the function app at the local stack: app settings for the emulator and
Azurite, and the managed identity endpoint the emulator serves."""

from __future__ import annotations

import pytest

from tests.support.stack import AzuriteInfo, EmulatorInfo


def client_secret_settings(emulator: EmulatorInfo, *, client_secret: str | None = None) -> dict[str, str]:
    """App settings for client-secret auth as the emulator's seeded app (another ``client_secret`` value, e.g.
    a Key Vault reference, when given), trusting the emulator's CA."""
    return {
        "D365_AUTH_MODE": "client_secret",
        "D365_CLIENT_ID": emulator.client_id,
        "D365_CLIENT_SECRET": emulator.client_secret if client_secret is None else client_secret,
        "D365_TENANT_ID": emulator.tenant_id,
        "D365_AUTHORITY_HOST": emulator.authority_host,
        "TLS_CA_BUNDLE": emulator.ca_file,
    }


def stack_env(emulator: EmulatorInfo, azurite: AzuriteInfo, **overrides: str) -> dict[str, str]:
    """The environment ``Settings.from_env`` reads: client-secret auth against the emulator's seeded app,
    Azurite storage and a short retry deadline; ``overrides`` add or replace settings."""
    return {
        "D365_BASE_URL": emulator.base_url,
        **client_secret_settings(emulator),
        "AzureWebJobsStorage": azurite.connection_string,
        "D365_RETRY_MAX_SECONDS": "5",
        **overrides,
    }


#: Environment variables that would make azure-identity pick another managed identity source.
_OTHER_IDENTITY_SOURCES = (
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_FEDERATED_TOKEN_FILE",
    "IDENTITY_SERVER_THUMBPRINT",
    "AZURE_AUTHORITY_HOST",
)


def use_emulator_managed_identity(emulator: EmulatorInfo, monkeypatch: pytest.MonkeyPatch) -> None:
    """App Service / Functions style managed identity (``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``) served by
    the emulator, with no other identity source inherited from the environment."""
    for name in _OTHER_IDENTITY_SOURCES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", emulator.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", emulator.identity_header)
