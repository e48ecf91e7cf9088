"""Masking of secrets in URLs, headers and free text before they reach logs, reprs or error messages.

An allow-nothing approach for known-sensitive names: SAS signatures (``sig``), function keys (``code``),
OAuth fields (``client_secret``, ``access_token``, ...), ``Authorization``-style headers, storage connection
string keys and anything shaped like a JWT. Everything else is kept verbatim so messages stay useful
(e.g. a SAS URL keeps ``sv``/``se``/``sp`` for diagnosis; only the signature goes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

__all__ = ["MASK", "SENSITIVE_HEADERS", "SENSITIVE_PARAMETERS", "redact_headers", "redact_text", "redact_url"]

MASK = "***"

#: Query/form parameters whose value is a credential (compared case-insensitively).
SENSITIVE_PARAMETERS = frozenset(
    {
        "sig",  # SAS signature (service, account and user-delegation SAS alike, with or without `se`)
        "code",  # Azure Functions key / OAuth authorization code
        "client_secret",
        "client_assertion",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "password",
        "secret",
        "api_key",
        "apikey",
        "subscription-key",
    }
)

#: Headers whose value is a credential (compared case-insensitively).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-identity-header",
        "x-functions-key",
        "x-ms-functions-key",
        "ocp-apim-subscription-key",
        "cookie",
        "set-cookie",
        "x-ms-encryption-key",
    }
)

# Names distinctive enough to mask wherever they appear as `name=value` or `"name": "value"`.
_DISTINCTIVE = ("client_secret", "client_assertion", "access_token", "refresh_token", "id_token", "password")
# Names that are only credentials as a URL/form parameter (after ? & ; #): `sig`, `code`, `token`, ...
_PARAM_NAMES = "|".join(sorted((re.escape(n) for n in SENSITIVE_PARAMETERS), key=len, reverse=True))
_PARAM_RE = re.compile(rf"(?i)([?&#;](?:{_PARAM_NAMES})=)[^&#\s\"'<>]*")
_KEYVALUE_RE = re.compile(rf"(?i)([\"']?\b(?:{'|'.join(_DISTINCTIVE)})[\"']?\s*[:=]\s*[\"']?)[^\"'&\s,;}}]+")
_CONNSTR_RE = re.compile(
    r"(?i)\b((?:AccountKey|SharedAccessSignature|SharedAccessKey|Password|Pwd)=)[^;\s\"']+"
)
_HEADER_NAMES = "|".join(re.escape(h) for h in sorted(SENSITIVE_HEADERS, key=len, reverse=True))
_HEADER_RE = re.compile(rf"(?i)([\"']?\b(?:{_HEADER_NAMES})[\"']?\s*[:=]\s*[\"']?)[^\"'\r\n,}}]+")
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def _redact_pairs(part: str, separator: str = "&") -> str:
    """Mask the values of sensitive ``name=value`` pairs in a query string or fragment, keeping the rest."""
    if not part:
        return part
    pieces = []
    for pair in part.split(separator):
        name, eq, _value = pair.partition("=")
        if eq and name.strip().lower() in SENSITIVE_PARAMETERS:
            pieces.append(f"{name}={MASK}")
        else:
            pieces.append(pair)
    return separator.join(pieces)


def redact_url(url: str) -> str:
    """Return ``url`` with credential query parameters and any userinfo password masked.

    >>> redact_url("https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sig=abc%3D")
    'https://acct.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sig=***'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if colon else f"{MASK}@{hostport}"
    return urlunsplit(
        (parts.scheme, netloc, parts.path, _redact_pairs(parts.query), _redact_pairs(parts.fragment))
    )


def redact_text(text: str) -> str:
    """Mask credentials anywhere in free text (log lines, exception messages, response snippets).

    Handles URLs inside the text, ``Authorization: Bearer ...`` and other secret headers (also in dict
    reprs), JSON/form fields such as ``"access_token": "..."``, storage connection strings and bare JWTs.
    """
    if not text:
        return text
    out = _PARAM_RE.sub(rf"\g<1>{MASK}", text)
    out = _HEADER_RE.sub(rf"\g<1>{MASK}", out)
    out = _BEARER_RE.sub(rf"\g<1> {MASK}", out)
    out = _KEYVALUE_RE.sub(rf"\g<1>{MASK}", out)
    out = _CONNSTR_RE.sub(rf"\g<1>{MASK}", out)
    return _JWT_RE.sub(MASK, out)


def redact_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """A copy of ``headers`` safe to log: secret headers masked, URL-valued headers redacted."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    safe: dict[str, str] = {}
    for name, value in items:
        if name.lower() in SENSITIVE_HEADERS:
            safe[name] = MASK
        elif "://" in value:
            safe[name] = redact_url(value) if " " not in value.strip() else redact_text(value)
        else:
            safe[name] = value
    return safe
