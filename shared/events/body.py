"""Reading a receiver request body: one JSON event, or a JSON array of events, each with its exact bytes.

An array is scanned element by element (``raw_decode``), so every event keeps the bytes it was sent as,
and the body is parsed once. Event Grid / CloudEvents elements are unwrapped by ``eventgrid.unwrap``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.events.eventgrid import Item, unwrap, validation_code

__all__ = ["BodyError", "ParsedBody", "read_body"]

_DECODER = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


class BodyError(ValueError):
    """The body as a whole is unusable (status 400): not UTF-8, not JSON, or an empty array."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedBody:
    items: list[Item]
    batch: bool  # the body was a JSON array (the answer lists one result per element)
    validation_code: str | None = None  # an Event Grid subscription validation handshake


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in _WHITESPACE:
        position += 1
    return position


def _where(exc: json.JSONDecodeError) -> str:
    return f"line {exc.lineno} column {exc.colno}: {exc.msg}"


def _split_array(text: str, start: int) -> list[tuple[object, str]]:
    """Elements of the array starting at ``text[start] == '['`` with their exact source text."""
    elements: list[tuple[object, str]] = []
    position = _skip(text, start + 1)
    if position < len(text) and text[position] == "]":
        end = position + 1
    else:
        while True:
            try:
                value, end = _DECODER.raw_decode(text, position)
            except json.JSONDecodeError as exc:
                raise BodyError("invalid_json", f"the body is not valid JSON ({_where(exc)})") from None
            elements.append((value, text[position:end]))
            position = _skip(text, end)
            if text[position : position + 1] == ",":
                position = _skip(text, position + 1)
                continue
            if text[position : position + 1] == "]":
                end = position + 1
                break
            raise BodyError("invalid_json", "the body is not valid JSON (expected ',' or ']' in the array)")
    if _skip(text, end) != len(text):
        raise BodyError("invalid_json", "the body is not valid JSON (extra data after the array)")
    return elements


def read_body(body: bytes) -> ParsedBody:
    """Decode the body into events (raises BodyError for a body that is not one JSON value/array)."""
    if not body.strip():
        raise BodyError("empty_body", "the body is empty; expected a JSON business event")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError("invalid_json", "the body is not UTF-8 encoded JSON") from None
    text = text.removeprefix("\ufeff")
    start = _skip(text, 0)
    try:
        batch = text[start : start + 1] == "["
        elements = _split_array(text, start) if batch else [(json.loads(text), "")]
    except json.JSONDecodeError as exc:
        raise BodyError("invalid_json", f"the body is not valid JSON ({_where(exc)})") from None
    except RecursionError:
        raise BodyError("invalid_json", "the body is nested too deeply") from None
    if batch and not elements:
        raise BodyError("empty_batch", "the JSON array holds no events")
    if len(elements) == 1:
        code = validation_code(elements[0][0])
        if code is not None:
            return ParsedBody([], batch, code)
    items = [
        unwrap(index, value, source.encode("utf-8") if batch else body)
        for index, (value, source) in enumerate(elements)
    ]
    return ParsedBody(items, batch)
