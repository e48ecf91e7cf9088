"""Readiness: can this instance reach everything it depends on (D365 token, D365 OData, blob storage, and
Key Vault when ``KEY_VAULT_URL`` is set)?"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from shared.context import AppContext
from shared.keyvault import KeyVaultReference, SecretNotFoundError
from shared.redact import redact_text

#: A secret nobody creates: reading it costs one GET, and 404 proves the vault answers and the identity may
#: read secrets (without the permission Key Vault answers 403 first, which is a real failure).
KEY_VAULT_PROBE_SECRET = "d365-integration-readiness-probe"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    milliseconds: int


@dataclass(frozen=True)
class HealthReport:
    ok: bool
    checks: list[Check] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"status": "ok" if self.ok else "failing", "checks": [asdict(c) for c in self.checks]}


def _run(name: str, probe: Callable[[], str]) -> Check:
    started = time.perf_counter()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # a failing dependency is the answer, not an error of the probe
        detail, ok = redact_text(f"{type(exc).__name__}: {exc}"), False
    return Check(name, ok, detail, int((time.perf_counter() - started) * 1000))


def check_readiness(context: AppContext) -> HealthReport:
    """Probe each dependency once; every probe runs even when an earlier one failed."""

    def token() -> str:
        context.tokens.get_token()
        return f"token acquired for {context.settings.d365.scope}"

    def odata() -> str:
        rows = list(context.odata.list("LegalEntities", select=["LegalEntityId"], top=1))
        return f"{context.settings.d365.base_url}/data answers ({len(rows)} legal entity read)"

    def storage() -> str:
        # One bounded attempt: the SDK's default retries take ~85 s to give up on a dead endpoint, far past
        # any probe's patience; readiness is asked again anyway.
        containers = context.blob_service.list_containers(
            results_per_page=1, retry_total=0, connection_timeout=3, read_timeout=10, timeout=10
        )
        next(iter(containers), None)
        return f"blob storage reachable at {context.blob_service.primary_hostname}"

    def key_vault(vault_url: str) -> str:
        source = context.settings.secrets
        if source is None:
            raise RuntimeError("no secret source is configured for KEY_VAULT_URL")
        host = KeyVaultReference(vault_url, KEY_VAULT_PROBE_SECRET).vault_host
        try:
            source.resolve(KeyVaultReference(vault_url, KEY_VAULT_PROBE_SECRET))
        except SecretNotFoundError:
            return f"key vault {host} answers (probe secret absent, as expected)"
        return f"key vault {host} answers"

    checks = [_run("d365-token", token), _run("d365-odata", odata), _run("blob-storage", storage)]
    if (vault_url := context.settings.key_vault.url) is not None:
        checks.append(_run("key-vault", lambda: key_vault(vault_url)))
    return HealthReport(ok=all(c.ok for c in checks), checks=checks)
