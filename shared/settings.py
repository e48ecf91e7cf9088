"""Typed app settings, read once at start-up from the environment, validated all at once.

The Functions host puts app settings in ``os.environ``. ``Settings.from_env()`` reads them into frozen
dataclasses (one per concern, see ``settings_sections``), resolves any ``@Microsoft.KeyVault(...)`` reference
that arrives unresolved (locally; in Azure the platform resolves them), and reports *every* missing or
malformed setting in one :class:`ConfigurationError`. Secret-typed settings are :class:`Secret` objects whose
repr is masked; a Key Vault-backed secret re-reads its value through the TTL cache, so rotation is picked up
without a restart. Features add their own section class (``from_reader(reader)``) and get it with
``settings.section(MySettings)`` — or validate it at start-up via ``from_env(sections=[MySettings])``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from shared.keyvault import KeyVaultReference, SecretResolver, SecretSource
from shared.settings_reader import ConfigurationError, Secret, SettingsReader, SettingsSection
from shared.settings_sections import (
    AuthSettings,
    D365Settings,
    HttpSettings,
    KeyVaultSettings,
    StorageSettings,
    check_certificate,
)
from shared.trust_bundle import trust_bundle

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# The reader types are re-exported: they are what callers of ``Settings`` and feature sections work with.
__all__ = ["ConfigurationError", "Secret", "Settings", "SettingsReader", "SettingsSection"]

T = TypeVar("T")
S = TypeVar("S", bound=SettingsSection)


class _ReferenceSource:
    """Builds the Key Vault resolver (and its credential) on first use: no reference, no Key Vault call."""

    def __init__(self, make_credential: Callable[[], TokenCredential], vault: KeyVaultSettings) -> None:
        self._make_credential = make_credential
        self._vault = vault
        self._resolver: SecretResolver | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"_ReferenceSource(vault_url={self._vault.url!r})"

    def resolver(self) -> SecretResolver:
        with self._lock:
            if self._resolver is None:
                self._resolver = SecretResolver(
                    self._make_credential(),
                    cache_seconds=self._vault.cache_seconds,
                    ca_bundle=trust_bundle(self._vault.ca_bundle),
                    vault_url=self._vault.url,
                )
            return self._resolver

    def resolve(self, reference: KeyVaultReference) -> str:
        return self.resolver().resolve(reference)


@dataclass
class _Context:
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: SecretSource | None = None
    vault_url: str | None = None
    sections: dict[type, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Settings:
    """All settings of the app, one frozen section per concern (see each section's docstring for names).

    ``Settings.from_env()`` is the way to build it; tests may also construct sections directly.
    """

    d365: D365Settings
    auth: AuthSettings
    storage: StorageSettings
    http: HttpSettings = field(default_factory=HttpSettings)
    key_vault: KeyVaultSettings = field(default_factory=KeyVaultSettings)
    _context: _Context = field(default_factory=_Context, repr=False, compare=False)

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        secrets: SecretSource | None = None,
        sections: Iterable[type[SettingsSection]] = (),
    ) -> Settings:
        """Read and validate everything; raise one :class:`ConfigurationError` listing every problem.

        ``env`` defaults to ``os.environ``. ``secrets`` resolves Key Vault references; by default a
        :class:`~shared.keyvault.SecretResolver` is built on the first reference, with the credential
        described in :class:`KeyVaultSettings`. ``sections`` are feature sections validated now too.
        """
        env = os.environ if env is None else env
        bootstrap = SettingsReader(env)  # references refused: these are needed to reach Key Vault
        vault = KeyVaultSettings.from_reader(bootstrap)
        auth_referenced = any(bootstrap.is_reference(name) for name in AuthSettings.NAMES)
        holder: dict[str, AuthSettings] = {}

        def reference_credential() -> TokenCredential:
            from shared.identity import build_credential, managed_identity_credential

            if vault.reference_client_id or auth_referenced:
                return managed_identity_credential(vault.reference_client_id)
            if "auth" not in holder:
                raise RuntimeError(
                    "the D365 authentication settings are invalid, so Key Vault cannot be used"
                )
            return build_credential(holder["auth"])

        source = secrets if secrets is not None else _ReferenceSource(reference_credential, vault)
        reader = SettingsReader(env, secrets=source, vault_url=vault.url)
        reader.merge(bootstrap)
        auth = AuthSettings.from_reader(reader)
        if not any(p.split(":")[0] in (*AuthSettings.NAMES, "TLS_CA_BUNDLE") for p in reader.problems):
            holder["auth"] = auth
            check_certificate(reader, auth)
        d365 = D365Settings.from_reader(reader)
        storage = StorageSettings.from_reader(reader)
        http = HttpSettings.from_reader(reader)
        extra = {section: section.from_reader(reader) for section in sections}
        reader.raise_for_problems()
        context = _Context(env=env, secrets=source, vault_url=vault.url, sections=extra)
        return cls(d365=d365, auth=auth, storage=storage, http=http, key_vault=vault, _context=context)

    @property
    def secrets(self) -> SecretSource | None:
        """The source that resolves Key Vault references for these settings (for features' own secrets)."""
        return self._context.secrets

    def read(self, build: Callable[[SettingsReader], T]) -> T:
        """Run ``build`` on a reader over the same environment and secrets; raise its problems at once."""
        reader = SettingsReader(
            self._context.env, secrets=self._context.secrets, vault_url=self._context.vault_url
        )
        value = build(reader)
        reader.raise_for_problems()
        return value

    def section(self, cls: type[S]) -> S:
        """A feature's settings section, validated on first use (or at start-up via ``sections=``)."""
        with self._context.lock:
            found = self._context.sections.get(cls)
        if found is None:
            found = self.read(cls.from_reader)
            with self._context.lock:
                found = self._context.sections.setdefault(cls, found)
        return found  # type: ignore[no-any-return]
