"""``{name}`` templates in handler options, filled from an event's fields and normalised envelope.

A template that is exactly one placeholder (``"{JobId}"``) gives the value with its JSON type, so numeric
keys stay numbers; anything else is formatted as text. A name the event lacks is a configuration error.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

from shared.events.handler_api import PermanentHandlerError

__all__ = ["render", "render_mapping", "render_path"]

_SINGLE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}\Z")
_FORMATTER = string.Formatter()
_VALUE_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]")


def _value(values: Mapping[str, Any], name: str, template: str) -> Any:
    if name not in values or values[name] is None:
        raise PermanentHandlerError(f"template {template!r} uses {name!r}, which this event does not have")
    return values[name]


def render(template: object, values: Mapping[str, Any]) -> Any:
    """Fill one template (non-strings are returned unchanged)."""
    if not isinstance(template, str):
        return template
    single = _SINGLE.match(template)
    if single:
        return _value(values, single.group(1), template)
    try:
        pieces = []
        for literal, name, spec, conversion in _FORMATTER.parse(template):
            pieces.append(literal)
            if name is not None:
                if spec or conversion or not name.isidentifier():
                    raise PermanentHandlerError(f"template {template!r}: only plain {{name}} is supported")
                pieces.append(str(_value(values, name, template)))
    except ValueError as exc:
        raise PermanentHandlerError(f"template {template!r} is malformed: {exc}") from None
    return "".join(pieces)


def render_mapping(templates: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: render(value, values) for key, value in templates.items()}


def render_path(template: str, values: Mapping[str, Any]) -> str:
    """A blob path: filled values keep letters, digits, '_', '.', '-' (others, '/' included, become '_')."""
    safe = {
        name: None if value is None else _VALUE_UNSAFE.sub("_", str(value)) for name, value in values.items()
    }
    segments = [segment for segment in str(render(template, safe)).split("/") if segment]
    if not segments or any(segment in (".", "..") for segment in segments):
        raise PermanentHandlerError(f"template {template!r} gives no usable blob path")
    return "/".join(segments)
