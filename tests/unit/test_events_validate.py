"""Receiver checks and the business-events settings section: what is refused, with which status."""

from __future__ import annotations

import json

import pytest

from shared.events.model import parse_event
from shared.events.settings import (
    BusinessEventProcessingSettings,
    BusinessEventSettings,
    blob_source_name,
    raw_container_name,
)
from shared.events.validate import check_event, check_request, check_secret, content_type_allowed
from shared.settings import ConfigurationError, Secret, SettingsReader

EVENT = {"BusinessEventId": "X", "EventId": "A1", "EventTime": "/Date(1)/", "LegalEntity": "USMF"}


def section(**env: str) -> BusinessEventSettings:
    reader = SettingsReader(env)
    found = BusinessEventSettings.from_reader(reader)
    reader.raise_for_problems()
    return found


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (None, True),
        ("", True),
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("text/json", True),
        ("application/cloudevents-batch+json; charset=utf-8", True),
        ("text/plain; charset=utf-8", True),
        ("application/xml", False),
        ("multipart/form-data; boundary=x", False),
        ("application/x-www-form-urlencoded", False),
        ("application/jsonp", False),
    ],
)
def test_content_types(value: str | None, ok: bool) -> None:
    assert content_type_allowed(value, BusinessEventSettings().content_types) is ok


def test_request_size_and_content_type() -> None:
    settings = BusinessEventSettings(max_bytes=2048)
    assert check_request({"content-type": "application/json"}, b"x" * 2048, settings) is None
    too_big = check_request({}, b"x" * 2049, settings)
    assert too_big is not None
    assert (too_big.status, too_big.code) == (413, "too_large")
    wrong = check_request({"content-type": "application/xml"}, b"<a/>", settings)
    assert wrong is not None
    assert wrong.status == 415
    assert "application/xml" in wrong.message
    assert "application/json" in wrong.message


def test_shared_secret_header() -> None:
    settings = BusinessEventSettings(shared_secret=Secret("s3cret"), secret_header="X-Events-Key")
    assert check_secret({"x-events-key": "s3cret"}, settings) is None
    for headers in ({}, {"x-events-key": ""}, {"x-events-key": "s3cret "}, {"x-events-key": "wrong"}):
        rejection = check_secret(headers, settings)
        assert rejection is not None
        assert rejection.status == 401
        assert "s3cret" not in json.dumps(rejection.body())
    assert check_secret({}, BusinessEventSettings()) is None


def test_allow_lists_and_required_fields() -> None:
    event = parse_event(EVENT, b"")
    settings = section(
        BUSINESS_EVENTS_ALLOWED_EVENT_IDS="X, Y",
        BUSINESS_EVENTS_ALLOWED_LEGAL_ENTITIES="usmf,DEMF",
    )
    assert check_event(event, settings) is None
    other = parse_event({**EVENT, "BusinessEventId": "Z"}, b"")
    refused = check_event(other, settings)
    assert refused is not None
    assert (refused.status, refused.code) == (422, "event_not_accepted")
    elsewhere = parse_event({**EVENT, "LegalEntity": "frrt"}, b"")
    refused = check_event(elsewhere, settings)
    assert refused is not None
    assert refused.code == "legal_entity_not_accepted"
    assert "frrt" in refused.message
    strict = section(BUSINESS_EVENTS_REQUIRED_FIELDS="BusinessEventId,ControlNumber")
    missing = check_event(event, strict)
    assert missing is not None
    assert (missing.status, missing.message) == (
        400,
        "missing required field(s) ControlNumber",
    )


def processing(**env: str) -> BusinessEventProcessingSettings:
    reader = SettingsReader(env)
    found = BusinessEventProcessingSettings.from_reader(reader)
    reader.raise_for_problems()
    return found


def test_settings_defaults_and_problems() -> None:
    defaults = section()
    assert (defaults.raw_container, defaults.state_container, defaults.poison_container) == (
        "events",
        "state",
        "events-poison",
    )
    assert defaults.max_bytes == 1024 * 1024
    assert processing().max_attempts == 5
    assert processing().enriched_container == "events-enriched"
    assert [processing().retry_delay(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert processing(BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS="45").retry_delay(5) == 45
    with pytest.raises(ConfigurationError) as caught:
        section(
            BUSINESS_EVENTS_CONTAINER="Bad_Name",
            BUSINESS_EVENTS_MAX_BYTES="10",
            BUSINESS_EVENTS_SECRET_HEADER="bad header",
        )
    named = " ".join(caught.value.problems)
    for name in ("BUSINESS_EVENTS_CONTAINER", "BUSINESS_EVENTS_MAX_BYTES", "BUSINESS_EVENTS_SECRET_HEADER"):
        assert name in named
    with pytest.raises(ConfigurationError) as caught:
        processing(
            BUSINESS_EVENTS_HANDLERS='{"X": {"type": "teleport"}}',
            BUSINESS_EVENTS_MAX_ATTEMPTS="0",
            BUSINESS_EVENTS_RETRY_BACKOFF_SECONDS="100",
            BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS="10",
        )
    named = " ".join(caught.value.problems)
    for name in (
        "BUSINESS_EVENTS_HANDLERS",
        "BUSINESS_EVENTS_MAX_ATTEMPTS",
        "BUSINESS_EVENTS_RETRY_BACKOFF_MAX_SECONDS",
    ):
        assert name in named
    assert "teleport" in named


def test_handler_options_are_checked_at_start_up() -> None:
    with pytest.raises(ConfigurationError, match="must be https"):
        processing(BUSINESS_EVENTS_HANDLERS='{"*": {"type": "forward_http", "url": "http://example.com/in"}}')
    handler = {"type": "forward_http", "url_setting": "U", "timeout_seconds": 0}
    with pytest.raises(ConfigurationError, match="timeout_seconds"):
        processing(BUSINESS_EVENTS_HANDLERS=json.dumps({"*": handler}))
    found = processing(BUSINESS_EVENTS_HANDLERS='{"*": {"type": "forward_http", "url_setting": "U"}}')
    assert [spec.name for spec in found.handlers["*"]] == ["forward_http"]


def test_binding_settings_read_at_load_time() -> None:
    assert raw_container_name({}) == "events"
    assert raw_container_name({"BUSINESS_EVENTS_CONTAINER": " be-raw "}) == "be-raw"
    assert blob_source_name({}) == "LogsAndContainerScan"
    assert blob_source_name({"BUSINESS_EVENTS_BLOB_SOURCE": "eventgrid"}) == "EventGrid"
