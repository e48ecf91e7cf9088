"""Pure pieces of the runner: HTTP output encoding, auth levels, blob paths, retry delays."""

from __future__ import annotations

from inspect import ismodule

import azure.functions as func
import pytest

from runner.blobs import BlobPathError, parse_blob_path
from runner.http import encode_response
from runner.keys import HostKeys
from runner.timers import retry_delays


def test_http_response_mapping() -> None:
    status, headers, body = encode_response(
        func.HttpResponse(
            "héllo", status_code=418, headers={"X-A": "1"}, mimetype="text/csv", charset="latin-1"
        )
    )
    assert (status, body) == (418, "héllo".encode("latin-1"))
    assert (b"x-a", b"1") in headers
    assert (b"content-type", b"text/csv; charset=latin-1") in headers


def test_binary_mimetype_has_no_charset_and_explicit_content_type_wins() -> None:
    _, headers, _ = encode_response(func.HttpResponse(b"\x00", mimetype="application/octet-stream"))
    assert (b"content-type", b"application/octet-stream") in headers
    _, headers, _ = encode_response(
        func.HttpResponse("{}", headers={"Content-Type": "application/problem+json"})
    )
    assert [v for k, v in headers if k == b"content-type"] == [b"application/problem+json"]


def test_str_is_plain_text_and_other_types_fail_like_the_worker() -> None:
    assert encode_response("ok") == (200, [(b"content-type", b"text/plain; charset=utf-8")], b"ok")
    for value in (None, {"a": 1}, b"bytes"):
        with pytest.raises(TypeError, match="unable to encode outgoing TypedData"):
            encode_response(value)


KEYS = HostKeys(master="m", host_keys={"default": "h"}, function_keys={"orders": {"default": "f"}})


@pytest.mark.parametrize(
    ("level", "key", "allowed"),
    [
        ("ANONYMOUS", None, True),
        ("FUNCTION", None, False),
        ("FUNCTION", "f", True),
        ("FUNCTION", "h", True),
        ("FUNCTION", "m", True),
        ("FUNCTION", "wrong", False),
        ("ADMIN", "f", False),
        ("ADMIN", "h", False),
        ("ADMIN", "m", True),
    ],
)
def test_auth_levels(level: str, key: str | None, allowed: bool) -> None:
    assert KEYS.authorize("Orders", level, key) is allowed


def test_a_function_key_does_not_open_another_function() -> None:
    assert not KEYS.authorize("invoices", "function", "f")


def test_blob_paths() -> None:
    path = parse_blob_path("inbound/{name}.csv")
    assert (path.container, path.prefix) == ("inbound", "")
    assert path.match("a/b.csv") == {"name": "a/b"}
    assert path.match("a/b.txt") is None
    nested = parse_blob_path("drop/orders/{year}/{file}.json")
    assert nested.prefix == "orders/"
    assert nested.match("orders/2024/x.json") == {"year": "2024", "file": "x"}
    assert parse_blob_path("box").match("anything/at/all") == {}


@pytest.mark.parametrize("path", ["{c}/x", "Upper/{name}", "ab/{name}", "%SETTING%/x", "box/{a}{a}"])
def test_invalid_blob_paths(path: str) -> None:
    with pytest.raises(BlobPathError):
        parse_blob_path(path)


def test_retry_delays() -> None:
    assert retry_delays(None) == []
    assert retry_delays(
        {"strategy": "fixed_delay", "max_retry_count": "2", "delay_interval": "00:00:05"}
    ) == [
        5.0,
        5.0,
    ]
    backoff = {
        "strategy": "exponential_backoff",
        "max_retry_count": "4",
        "minimum_interval": "00:00:01",
        "maximum_interval": "00:00:05",
    }
    assert retry_delays(backoff) == [1.0, 2.0, 4.0, 5.0]


def test_public_api() -> None:
    """``__all__`` names exactly what the package imports for its users, and covers docs/runner.md's use."""
    import runner

    public = {name for name, value in vars(runner).items() if not (name.startswith("_") or ismodule(value))}
    assert sorted(runner.__all__) == sorted(public)
    documented = {
        "Runner", "RunnerError", "SettingsError", "apply_to_environment", "configure_logging", "load_app",
        "load_local_settings",
    }  # fmt: skip
    assert documented <= set(runner.__all__)
