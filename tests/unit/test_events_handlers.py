"""Handler configuration, the registry (configuration + Python registration) and templates."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.d365.errors import D365AuthError, D365ClientError, D365ServerError, ODataQueryError
from shared.events.handler_api import PermanentHandlerError, is_permanent
from shared.events.handler_config import parse_handler_config
from shared.events.handlers import HandlerRegistry, archive
from shared.events.model import parse_event
from shared.events.templates import render, render_mapping, render_path

KNOWN = {"archive", "forward_http", "forward_blob", "enrich", "custom"}
EVENT = parse_event(
    {
        "BusinessEventId": "SalesInvoicePostedBusinessEvent",
        "BusinessEventLegalEntity": "USMF",
        "EventId": "A1",
        "EventTime": "/Date(1672408275000)/",
        "InvoiceId": "CIV/0001",
        "JobId": 42,
    },
    b"{}",
)


def test_config_format_single_or_list_names_and_defaults() -> None:
    text = json.dumps(
        {
            "SalesInvoicePostedBusinessEvent": [
                {"type": "enrich", "entity_set": "Invoices", "key": {"Id": "{InvoiceId}"}},
                {"type": "forward_http", "url": "https://erp.example.com/in", "when_out_of_order": "skip"},
            ],
            "*": {"type": "archive", "name": "keep"},
        }
    )
    config, problems = parse_handler_config(text, KNOWN)
    assert problems == []
    first, second = config["SalesInvoicePostedBusinessEvent"]
    assert (first.type, first.name, first.skip_out_of_order) == ("enrich", "enrich#1", False)
    assert (second.name, second.skip_out_of_order) == ("forward_http#2", True)
    assert second.options == {"url": "https://erp.example.com/in"}
    assert config["*"][0].name == "keep"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"X": 3}', "must be a JSON object"),
        ('{"X": {"type": "nope"}}', "unknown handler type 'nope'"),
        ('{"X": {"type": "enrich", "entity_set": "A"}}', "enrich needs key"),
        ('{"X": {"type": "forward_blob", "container": "c", "colour": "red"}}', "does not take colour"),
        ('{"X": {"type": "forward_http"}}', "exactly one of url and url_setting"),
        ('{"X": {"type": "archive", "when_out_of_order": "maybe"}}', "when_out_of_order"),
        ('{"X": [{"type": "archive", "name": "a"}, {"type": "archive", "name": "a"}]}', "unique"),
    ],
)
def test_config_problems_are_explained(value: str, words: str) -> None:
    _, problems = parse_handler_config(value, KNOWN)
    assert any(words in p for p in problems), problems


def test_resolution_order_defaults_and_python_registration() -> None:
    registry = HandlerRegistry()
    config, _ = parse_handler_config(
        json.dumps({"A": {"type": "archive", "name": "a-archive"}, "*": {"type": "archive", "name": "any"}}),
        KNOWN,
    )
    assert [h.name for h in registry.resolve("B", {})] == ["archive"]
    assert registry.resolve("B", {})[0].run is archive
    assert [h.name for h in registry.resolve("A", config)] == ["a-archive"]
    assert [h.name for h in registry.resolve("B", config)] == ["any"]
    assert [h.name for h in registry.resolve(None, config)] == ["any"]

    @registry.handler("A", skip_out_of_order=True)
    def update_erp(event: Any, context: Any) -> None:
        return None

    registry.register("*", lambda e, c: None, name="audit")
    resolved = registry.resolve("A", config)
    assert [(h.name, h.skip_out_of_order) for h in resolved] == [
        ("a-archive", False),
        ("test_resolution_order_defaults_and_python_registration.<locals>.update_erp", True),
        ("audit", False),
    ]
    with pytest.raises(ValueError):
        registry.register("*", lambda e, c: None, name="audit")
    registry.unregister("*", "audit")
    assert [h.name for h in registry.resolve("B", {})] == ["archive"]


def test_custom_types_and_misconfigured_handlers() -> None:
    registry = HandlerRegistry()
    built: list[dict[str, Any]] = []

    def factory(options: Any) -> Any:
        if "bad" in options:
            raise ValueError("bad option")
        built.append(dict(options))
        return archive

    registry.register_type("custom", factory)
    assert "custom" in registry.type_names()
    config, _ = parse_handler_config(
        '{"X": {"type": "custom", "n": 1}, "Y": {"type": "custom", "bad": 1}}', KNOWN
    )
    registry.resolve("X", config)
    registry.resolve("X", config)
    assert built == [{"n": 1}]  # built once per configured handler
    with pytest.raises(PermanentHandlerError, match="misconfigured: bad option"):
        registry.resolve("Y", config)
    http, _ = parse_handler_config('{"X": {"type": "forward_http", "url": "http://example.com/x"}}', KNOWN)
    with pytest.raises(PermanentHandlerError, match="must be https"):
        HandlerRegistry().resolve("X", http)


def test_templates_keep_types_and_make_safe_paths() -> None:
    values = EVENT.template_values()
    assert render("{JobId}", values) == 42
    assert render("job-{JobId}", values) == "job-42"
    assert render(7, values) == 7
    assert render_mapping({"dataAreaId": "{legal_entity}", "InvoiceNumber": "{InvoiceId}"}, values) == {
        "dataAreaId": "usmf",
        "InvoiceNumber": "CIV/0001",
    }
    assert render_path("{business_event_id}/{InvoiceId}/{yyyy}-{mm}-{dd}.json", values) == (
        "SalesInvoicePostedBusinessEvent/CIV_0001/2022-12-30.json"
    )
    for bad in ("{Missing}", "x-{Missing}", "{JobId:>5}", "{a.b}", "{"):
        with pytest.raises(PermanentHandlerError):
            render(bad, values)
    with pytest.raises(PermanentHandlerError):
        render_path("/../", values)


def test_which_errors_are_permanent() -> None:
    assert is_permanent(PermanentHandlerError("x"))
    assert is_permanent(ODataQueryError("x"))
    assert is_permanent(D365ClientError("bad", status_code=400))
    assert not is_permanent(D365AuthError("denied", status_code=403))
    assert not is_permanent(D365ServerError("down", status_code=500))
    assert not is_permanent(ConnectionError())
