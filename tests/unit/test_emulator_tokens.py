"""The emulator's token authority (emulator/entra.py) on a fake clock: what D365 and Key Vault accept."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator.entra import InvalidTokenError, TokenAuthority, normalize_audience

TENANT = "6f0b3c41-5d1e-4b7a-9c55-0d365f0e0001"
D365 = "http://127.0.0.1:8765"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def authority(tmp_path: Path, clock: Clock) -> TokenAuthority:
    return TokenAuthority(tenant_id=TENANT, lifetime_seconds=60, key_path=tmp_path / "key.pem", clock=clock)


def issue(authority: TokenAuthority, **kwargs: object) -> str:
    args: dict[str, object] = {"app_id": "app-1", "object_id": "oid-1", "audience": D365, **kwargs}
    return authority.issue(**args).access_token  # type: ignore[arg-type]


def test_valid_token_claims(authority: TokenAuthority, clock: Clock) -> None:
    token = issue(authority, audience=D365 + "/")
    claims = authority.validate(token, D365)
    assert claims["aud"] == D365  # trailing slash removed, lowercase (ref §8.1)
    assert claims["iss"] == f"https://sts.windows.net/{TENANT}/"
    assert claims["tid"] == TENANT
    assert (claims["appid"], claims["azp"], claims["oid"], claims["sub"]) == (
        "app-1",
        "app-1",
        "oid-1",
        "oid-1",
    )
    assert claims["exp"] - claims["iat"] == 60
    assert claims["ver"] == "1.0"
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["kid"] == authority.kid


def test_expiry_is_enforced_even_for_cached_tokens(authority: TokenAuthority, clock: Clock) -> None:
    token = issue(authority)
    authority.validate(token, D365)  # cached now
    clock.now += 60
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(token, D365)
    assert info.value.kind == "expired"


def test_not_yet_valid(authority: TokenAuthority) -> None:
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(issue(authority, not_before_offset=30), D365)
    assert info.value.kind == "not_yet_valid"


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"audience": "https://other.operations.dynamics.com"}, "audience"),
        ({"tenant_id": "00000000-0000-0000-0000-000000000000"}, "tenant"),
        ({"lifetime_seconds": -5}, "expired"),
    ],
)
def test_rejections(authority: TokenAuthority, kwargs: dict[str, object], kind: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(issue(authority, **kwargs), D365)
    assert info.value.kind == kind
    assert str(info.value)  # a human reason (the Key Vault shows it)


def test_cached_token_is_checked_against_the_audience(authority: TokenAuthority) -> None:
    token = issue(authority)
    authority.validate(token, D365)
    with pytest.raises(InvalidTokenError):
        authority.validate(token, "https://vault.azure.net")


def test_foreign_signature_is_refused(authority: TokenAuthority) -> None:
    claims = jwt.decode(issue(authority), options={"verify_signature": False})
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": authority.kid})
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(forged, D365)
    assert info.value.kind == "signature"


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c"])
def test_malformed(authority: TokenAuthority, garbage: str) -> None:
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(garbage, D365)
    assert info.value.kind == "malformed"


def test_unsigned_token_is_refused(authority: TokenAuthority) -> None:
    claims = jwt.decode(issue(authority), options={"verify_signature": False})
    unsigned = jwt.encode(claims, "", algorithm="none")
    with pytest.raises(InvalidTokenError):
        authority.validate(unsigned, D365)


def test_key_rotation_invalidates_issued_tokens(authority: TokenAuthority, tmp_path: Path) -> None:
    old = issue(authority)
    authority.validate(old, D365)
    old_kid = authority.kid
    assert authority.rotate_key() != old_kid
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(old, D365)
    assert info.value.kind == "signature"
    authority.validate(issue(authority), D365)
    # the persisted key is the new one: a restarted emulator keeps accepting new tokens
    reopened = TokenAuthority(tenant_id=TENANT, key_path=tmp_path / "key.pem")
    assert reopened.kid == authority.kid


def test_revocation_by_token_and_by_app(authority: TokenAuthority, clock: Clock) -> None:
    token = issue(authority)
    uti = authority.validate(token, D365)["uti"]
    authority.revoke(token_id=uti)
    with pytest.raises(InvalidTokenError) as info:
        authority.validate(token, D365)
    assert info.value.kind == "revoked"
    other = issue(authority)
    authority.revoke(app_id="APP-1")
    with pytest.raises(InvalidTokenError):
        authority.validate(other, D365)
    clock.now += 1
    authority.validate(issue(authority), D365)  # issued after the revocation
    authority.reset()
    authority.validate(other, D365)


def test_jwks_verifies_tokens(authority: TokenAuthority) -> None:
    jwk = authority.jwks()["keys"][0]
    assert jwk["kid"] == authority.kid
    key = jwt.PyJWK(jwk).key
    claims = jwt.decode(
        issue(authority),
        key,
        algorithms=["RS256"],
        audience=D365,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["appid"] == "app-1"


def test_normalize_audience() -> None:
    assert (
        normalize_audience("HTTPS://Contoso.Operations.Dynamics.com/")
        == "https://contoso.operations.dynamics.com"
    )
