"""Secrets never survive redaction; everything useful for diagnosis does."""

from __future__ import annotations

import pytest

from shared.redact import redact_headers, redact_text, redact_url

JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3gifQ.c2lnbmF0dXJlLXBhcnQ"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://acct.blob.core.windows.net/c/b.zip?sv=2022-11-02&se=2030-01-01&sp=rw&sig=abc%2Bdef%3D",
            "https://acct.blob.core.windows.net/c/b.zip?sv=2022-11-02&se=2030-01-01&sp=rw&sig=***",
        ),
        # a SAS without `se` (stored access policy) still loses its signature
        (
            "https://a.blob.core.windows.net/c?si=policy&sv=2022&SIG=secret",
            "https://a.blob.core.windows.net/c?si=policy&sv=2022&SIG=***",
        ),
        (
            "https://app.azurewebsites.net/api/events?code=fnkey==&x=1",
            "https://app.azurewebsites.net/api/events?code=***&x=1",
        ),
        ("https://h/cb#access_token=tok&state=1", "https://h/cb#access_token=***&state=1"),
        ("https://user:pa55@h.example/x", "https://user:***@h.example/x"),
        (
            "https://h/token?client_secret=s&token=t&password=p",
            "https://h/token?client_secret=***&token=***&password=***",
        ),
        (
            "https://contoso.operations.dynamics.com/data/Customers?$top=5",
            "https://contoso.operations.dynamics.com/data/Customers?$top=5",
        ),
    ],
)
def test_redact_url_masks_only_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_url_leaves_a_url_without_secrets_unchanged() -> None:
    url = "http://127.0.0.1:8765/data/CustomersV3?cross-company=true&$filter=Name%20eq%20'x'"
    assert redact_url(url) == url


@pytest.mark.parametrize(
    "text",
    [
        "GET https://a.blob.core.windows.net/c/b?sv=2022&sig=TOPSECRET HTTP/1.1",
        "headers={'Authorization': 'Bearer TOPSECRET', 'Accept': 'json'}",
        "Authorization: Bearer TOPSECRET",
        "authorization=Basic TOPSECRET",
        '{"token_type": "Bearer", "access_token": "TOPSECRET", "expires_in": 3599}',
        "grant_type=client_credentials&client_id=abc&client_secret=TOPSECRET&scope=x",
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=TOPSECRET;EndpointSuffix=core.windows.net",
        "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=TOPSECRET",
        "X-IDENTITY-HEADER: TOPSECRET",
        "refresh failed: 'refresh_token': 'TOPSECRET'",
        "calling https://h/api?code=TOPSECRET failed",
    ],
)
def test_redact_text_masks_secrets_in_free_text(text: str) -> None:
    out = redact_text(text)
    assert "TOPSECRET" not in out
    assert "***" in out


def test_redact_text_masks_bare_jwts_and_keeps_context() -> None:
    out = redact_text(f"token was {JWT} for https://contoso.operations.dynamics.com")
    assert JWT not in out
    assert "https://contoso.operations.dynamics.com" in out
    assert out.startswith("token was ***")


def test_redact_text_keeps_harmless_text() -> None:
    text = "HTTP 404: SecretNotFound in vault 127.0.0.1:8766 (status code 404, se=2030)"
    assert redact_text(text) == text
    assert redact_text("") == ""


def test_redact_headers_masks_secret_headers_and_urls() -> None:
    safe = redact_headers(
        {
            "Authorization": "Bearer abc",
            "x-functions-key": "k",
            "Location": "https://a.blob.core.windows.net/c/b?sv=1&sig=s",
            "Content-Type": "application/json",
        }
    )
    assert safe == {
        "Authorization": "***",
        "x-functions-key": "***",
        "Location": "https://a.blob.core.windows.net/c/b?sv=1&sig=***",
        "Content-Type": "application/json",
    }
    assert redact_headers([("Cookie", "a=b")]) == {"Cookie": "***"}
