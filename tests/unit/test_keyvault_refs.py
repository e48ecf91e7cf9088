"""Key Vault reference parsing and the resolver's TTL cache / error mapping (SDK client faked)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared import keyvault
from shared.keyvault import (
    InvalidKeyVaultReferenceError,
    KeyVaultAccessError,
    KeyVaultError,
    KeyVaultReference,
    KeyVaultUnreachableError,
    SecretNotFoundError,
    SecretResolver,
    parse_key_vault_reference,
)

# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/d365-secret/)",
            KeyVaultReference("https://myvault.vault.azure.net/", "d365-secret"),
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://myvault.vault.azure.net/secrets/d365-secret)",
            KeyVaultReference("https://myvault.vault.azure.net/", "d365-secret"),
        ),
        (
            "@Microsoft.KeyVault(SecretUri=https://MyVault.vault.azure.net/secrets/s/0123abcd)",
            KeyVaultReference("https://myvault.vault.azure.net/", "s", "0123abcd"),
        ),
        (
            "  @microsoft.keyvault(secreturi=https://127.0.0.1:8766/secrets/local-secret/)  ",
            KeyVaultReference("https://127.0.0.1:8766/", "local-secret"),
        ),
        (
            "@Microsoft.KeyVault(VaultName=myvault;SecretName=d365-secret)",
            KeyVaultReference("https://myvault.vault.azure.net/", "d365-secret"),
        ),
        (
            "@Microsoft.KeyVault(VaultName=myvault; SecretName=d365-secret; SecretVersion=abc123)",
            KeyVaultReference("https://myvault.vault.azure.net/", "d365-secret", "abc123"),
        ),
    ],
)
def test_parses_both_reference_forms(value: str, expected: KeyVaultReference) -> None:
    assert parse_key_vault_reference(value) == expected


@pytest.mark.parametrize("value", [None, "", "plain value", "https://x/secrets/y", "@Microsoft.Other(x=y)"])
def test_non_references_are_none(value: str | None) -> None:
    assert parse_key_vault_reference(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/x/",  # no closing parenthesis
        "@Microsoft.KeyVault(SecretUri=http://v.vault.azure.net/secrets/x/)",  # not https
        "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/keys/x/)",
        "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/)",
        "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/bad_name/)",
        "@Microsoft.KeyVault(SecretUri=https://v.vault.azure.net/secrets/a/b/c)",
        "@Microsoft.KeyVault(VaultName=myvault)",
        "@Microsoft.KeyVault(SecretName=x)",
        "@Microsoft.KeyVault(VaultName=my.vault;SecretName=x)",
        "@Microsoft.KeyVault(VaultName=v12;SecretName=x;Colour=blue)",
        "@Microsoft.KeyVault(VaultName=;SecretName=x)",
        "@Microsoft.KeyVault()",
    ],
)
def test_malformed_references_raise(value: str) -> None:
    with pytest.raises(InvalidKeyVaultReferenceError):
        parse_key_vault_reference(value)


def test_vault_name_maps_to_configured_vault_when_it_stands_for_that_name() -> None:
    ref = "@Microsoft.KeyVault(VaultName=MyVault;SecretName=s)"
    # the configured vault's first host label is the name
    assert parse_key_vault_reference(ref, vault_url="https://myvault.vault.azure.cn/").vault_url == (  # type: ignore[union-attr]
        "https://myvault.vault.azure.cn/"
    )
    # a loopback vault (the local emulator) stands in for every vault name
    assert parse_key_vault_reference(ref, vault_url="https://127.0.0.1:8766").vault_url == (  # type: ignore[union-attr]
        "https://127.0.0.1:8766/"
    )
    # another real vault does not
    assert parse_key_vault_reference(ref, vault_url="https://other.vault.azure.net/").vault_url == (  # type: ignore[union-attr]
        "https://myvault.vault.azure.net/"
    )


def test_reference_str_and_host_never_hold_a_value() -> None:
    ref = KeyVaultReference("https://127.0.0.1:8766/", "name", "v1")
    assert ref.vault_host == "127.0.0.1:8766"
    assert str(ref) == "https://127.0.0.1:8766/secrets/name/v1"


# ----------------------------------------------------------------------------------------- resolver


class FakeSecret:
    def __init__(self, value: str) -> None:
        self.value = value


class FakeSecretClient:
    """Stands in for azure.keyvault.secrets.SecretClient: values per vault, or an error to raise."""

    vaults: ClassVar[dict[str, dict[str, str]]] = {}
    errors: ClassVar[dict[str, Exception]] = {}
    created: ClassVar[list[tuple[str, dict[str, Any]]]] = []
    calls: ClassVar[list[tuple[str, str, str | None]]] = []

    def __init__(self, vault_url: str, credential: object, **kwargs: Any) -> None:
        self.vault_url = vault_url
        FakeSecretClient.created.append((vault_url, kwargs))

    def get_secret(self, name: str, version: str | None = None) -> FakeSecret:
        FakeSecretClient.calls.append((self.vault_url, name, version))
        if self.vault_url in self.errors:
            raise self.errors[self.vault_url]
        try:
            return FakeSecret(self.vaults[self.vault_url][name])
        except KeyError:
            raise ResourceNotFoundError(message=f"A secret with (name/id) {name} was not found") from None

    def close(self) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


LOCAL = "https://127.0.0.1:8766/"
REAL = "https://prod.vault.azure.net/"


@pytest.fixture
def fake_client(monkeypatch: pytest.MonkeyPatch) -> type[FakeSecretClient]:
    import azure.keyvault.secrets

    FakeSecretClient.vaults = {LOCAL: {"s": "v1"}, REAL: {"s": "prod"}}
    FakeSecretClient.errors = {}
    FakeSecretClient.created = []
    FakeSecretClient.calls = []
    monkeypatch.setattr(azure.keyvault.secrets, "SecretClient", FakeSecretClient)
    return FakeSecretClient


def test_values_are_cached_for_the_ttl_then_refetched(fake_client: type[FakeSecretClient]) -> None:
    clock = Clock()
    resolver = SecretResolver(object(), cache_seconds=60, clock=clock, vault_url=LOCAL)  # type: ignore[arg-type]
    assert resolver.get("s") == "v1"
    fake_client.vaults[LOCAL]["s"] = "v2"  # rotated
    clock.now += 59
    assert resolver.get("s") == "v1"  # still inside the TTL
    clock.now += 2
    assert resolver.get("s") == "v2"  # picked up after the TTL
    assert len(fake_client.calls) == 2


def test_refresh_forces_the_next_read(fake_client: type[FakeSecretClient]) -> None:
    resolver = SecretResolver(object(), cache_seconds=300, clock=Clock(), vault_url=LOCAL)  # type: ignore[arg-type]
    resolver.get("s")
    fake_client.vaults[LOCAL]["s"] = "v2"
    resolver.refresh("s")
    assert resolver.get("s") == "v2"


def test_zero_ttl_disables_caching(fake_client: type[FakeSecretClient]) -> None:
    resolver = SecretResolver(object(), cache_seconds=0, clock=Clock())  # type: ignore[arg-type]
    ref = KeyVaultReference(LOCAL, "s")
    resolver.resolve(ref)
    resolver.resolve(ref)
    assert len(fake_client.calls) == 2


def test_one_client_per_vault_with_challenge_check_off_only_for_loopback(
    fake_client: type[FakeSecretClient],
) -> None:
    resolver = SecretResolver(object(), ca_bundle="/tmp/ca.pem", clock=Clock())  # type: ignore[arg-type]
    for _ in range(3):
        assert resolver.resolve(KeyVaultReference(LOCAL, "s")) == "v1"
        assert resolver.resolve(KeyVaultReference(REAL, "s", "ver1")) == "prod"
    created = dict(fake_client.created)
    assert len(fake_client.created) == 2
    assert created[LOCAL]["verify_challenge_resource"] is False
    assert "verify_challenge_resource" not in created[REAL]
    assert created[LOCAL]["connection_verify"] == "/tmp/ca.pem"
    assert ("https://prod.vault.azure.net/", "s", "ver1") in fake_client.calls


def test_get_without_any_vault_is_a_usage_error(fake_client: type[FakeSecretClient]) -> None:
    with pytest.raises(ValueError, match="KEY_VAULT_URL"):
        SecretResolver(object()).get("s")  # type: ignore[arg-type]


def _status_error(status: int) -> HttpResponseError:
    error = HttpResponseError(message=f"status {status}")
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ResourceNotFoundError(message="nope"), SecretNotFoundError),
        (_status_error(403), KeyVaultAccessError),
        (
            ClientAuthenticationError(message="ManagedIdentityCredential authentication unavailable"),
            KeyVaultAccessError,
        ),
        (ServiceRequestError(message="Connection refused"), KeyVaultUnreachableError),
        (ServiceRequestError(message="[SSL: CERTIFICATE_VERIFY_FAILED]"), KeyVaultUnreachableError),
        (_status_error(500), KeyVaultError),
    ],
)
def test_sdk_errors_become_typed_errors_naming_vault_and_secret(
    fake_client: type[FakeSecretClient], error: Exception, expected: type[KeyVaultError]
) -> None:
    fake_client.errors[LOCAL] = error
    resolver = SecretResolver(object(), clock=Clock())  # type: ignore[arg-type]
    with pytest.raises(expected) as caught:
        resolver.resolve(KeyVaultReference(LOCAL, "d365-secret"))
    assert type(caught.value) is expected
    assert caught.value.vault_host == "127.0.0.1:8766"
    assert caught.value.secret_name == "d365-secret"
    assert "127.0.0.1:8766" in str(caught.value)
    assert "d365-secret" in str(caught.value)


def test_missing_secret_error_never_contains_other_values(fake_client: type[FakeSecretClient]) -> None:
    resolver = SecretResolver(object(), clock=Clock())  # type: ignore[arg-type]
    resolver.resolve(KeyVaultReference(LOCAL, "s"))
    with pytest.raises(SecretNotFoundError) as caught:
        resolver.resolve(KeyVaultReference(LOCAL, "other"))
    assert "v1" not in str(caught.value)


def test_an_unreachable_vault_serves_the_last_value_for_a_while(fake_client: type[FakeSecretClient]) -> None:
    clock = Clock()
    resolver = SecretResolver(object(), cache_seconds=60, clock=clock)  # type: ignore[arg-type]
    ref = KeyVaultReference(LOCAL, "s")
    assert resolver.resolve(ref) == "v1"
    fake_client.errors[LOCAL] = ServiceRequestError(message="Connection refused")
    clock.now += 61
    assert resolver.resolve(ref) == "v1"  # stale, with a warning
    calls = len(fake_client.calls)
    clock.now += 10
    assert resolver.resolve(ref) == "v1"
    assert len(fake_client.calls) == calls  # not hammering the vault
    del fake_client.errors[LOCAL]
    fake_client.vaults[LOCAL]["s"] = "v2"
    clock.now += 31
    assert resolver.resolve(ref) == "v2"


def test_other_failures_are_not_masked_by_the_cache(fake_client: type[FakeSecretClient]) -> None:
    clock = Clock()
    resolver = SecretResolver(object(), cache_seconds=60, clock=clock)  # type: ignore[arg-type]
    ref = KeyVaultReference(LOCAL, "s")
    resolver.resolve(ref)
    del fake_client.vaults[LOCAL]["s"]
    clock.now += 61
    with pytest.raises(SecretNotFoundError):
        resolver.resolve(ref)


def test_repr_has_no_values(fake_client: type[FakeSecretClient]) -> None:
    resolver = SecretResolver(object(), clock=Clock(), vault_url=LOCAL)  # type: ignore[arg-type]
    resolver.get("s")
    assert "v1" not in repr(resolver)
    assert keyvault.is_loopback_host("localhost")
    assert keyvault.is_loopback_host("::1")
    assert not keyvault.is_loopback_host("vault.azure.net")
