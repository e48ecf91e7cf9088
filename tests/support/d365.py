"""The app's own D365 client stack pointed at a running emulator, for integration tests.

Tokens come the production way: ``shared.identity.D365TokenProvider`` over the credential that
``build_credential`` makes for ``D365_AUTH_MODE=client_secret`` — the emulator's https authority, no instance
discovery (not a Microsoft host) and its CA trusted — so these tests also exercise the real token path.
Tests that must count token fetches exactly bring their own provider (``tokens=``).
"""

from __future__ import annotations

from typing import Any

from shared.d365.retry import RetryPolicy
from shared.d365.tokens import TokenProvider
from shared.d365.transport import D365Transport
from shared.identity import D365TokenProvider, build_credential
from shared.settings import Secret
from shared.settings_sections import AuthMode, AuthSettings
from tests.support.stack import EmulatorInfo

__all__ = [
    "FAST_CONNECTOR",
    "FAST_RETRIES",
    "bearer_token",
    "client_secret_auth",
    "connector_at_test_pace",
    "faults",
    "limits",
    "logged",
    "make_transport",
    "token_provider",
]

#: Short backoffs so retry tests finish quickly; the deadline still leaves room for throttling waits.
FAST_RETRIES = RetryPolicy(backoff_base=0.05, backoff_max=0.2, total_timeout=60)


def client_secret_auth(
    info: EmulatorInfo, *, client_id: str | None = None, client_secret: str | None = None
) -> AuthSettings:
    """What the app settings for client-secret auth against the emulator's Entra stand-in give (the seeded
    app, or the registration ``client_id``/``client_secret`` name)."""
    return AuthSettings(
        mode=AuthMode.CLIENT_SECRET,
        client_id=client_id or info.client_id,
        tenant_id=info.tenant_id,
        client_secret=Secret(client_secret or info.client_secret),
        authority_host=info.authority_host,
        ca_bundle=info.ca_file,
    )


def token_provider(
    info: EmulatorInfo,
    *,
    scope: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
    **options: Any,
) -> D365TokenProvider:
    """The production token provider for ``scope`` (default: the emulator's D365 environment), as the seeded
    app or the given one; ``options`` go to its constructor."""
    auth = client_secret_auth(info, client_id=client_id, client_secret=client_secret)
    return D365TokenProvider(lambda: build_credential(auth), scope or f"{info.base_url}/.default", **options)


def bearer_token(info: EmulatorInfo, **provider: Any) -> str:
    """One token from ``token_provider(info, **provider)``, for tests that send their own requests."""
    return token_provider(info, **provider).get_token()


def make_transport(
    info: EmulatorInfo,
    *,
    tokens: TokenProvider | None = None,
    policy: RetryPolicy = FAST_RETRIES,
    **options: Any,
) -> D365Transport:
    """A transport to the emulator; ``options`` go to ``D365Transport`` (``sleep``, ``clock``, ...)."""
    return D365Transport(
        info.base_url, tokens if tokens is not None else token_provider(info), policy=policy, **options
    )


# -- emulator controls the client tests share


def faults(emulator: EmulatorInfo, *rules: dict[str, Any]) -> None:
    """Replace the emulator's fault rules (``PUT /_emulator/faults``)."""
    emulator.admin("PUT", "faults", json={"rules": list(rules)})


def limits(emulator: EmulatorInfo, **body: Any) -> None:
    emulator.admin("PUT", "limits", json=body)


#: Recurring-integrations pace for tests: messages picked up and processed in tens of milliseconds.
FAST_CONNECTOR = {"pickup_delay_seconds": 0.05, "step_seconds": 0.05, "export_delay_seconds": 0.1}


def connector_at_test_pace(emulator: EmulatorInfo) -> EmulatorInfo:
    """The emulator's connector and DMF engine at test pace (``FAST_CONNECTOR``, short DMF steps)."""
    emulator.admin("PUT", "connector/settings", json=FAST_CONNECTOR)
    emulator.admin("PUT", "dmf/settings", json={"step_delay_seconds": 0.01})
    return emulator


def logged(emulator: EmulatorInfo, path: str) -> list[dict[str, Any]]:
    answer = emulator.admin("GET", "requests", params={"path_prefix": path, "limit": 1000})
    return [r for r in answer["requests"] if r["path"] == path]
