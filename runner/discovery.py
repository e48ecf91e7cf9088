"""Find the app's functions from the same metadata the Functions host indexes: ``app.get_functions()``.

``get_functions()`` may be called only once per app object (a second call fails its unique-name check),
so the result is cached per app object for the life of the process; restarting a ``Runner`` on the same
app reuses it. Each function becomes a :class:`FunctionSpec` the runner can serve, or a :class:`Skipped`
entry saying why not (an unsupported trigger or binding, a parameter without a binding); the runner
logs every skipped function at start, never silently.
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Discovery", "FunctionSpec", "Skipped", "discover", "load_app"]

SUPPORTED_TRIGGERS = {"httpTrigger": "http", "timerTrigger": "timer", "blobTrigger": "blob"}
_cache: dict[int, tuple[object, list[Any]]] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class FunctionSpec:
    """One function the runner serves: its trigger, bindings and the user's callable."""

    name: str
    kind: str  # "http" | "timer" | "blob"
    trigger: Mapping[str, Any]
    bindings: tuple[Mapping[str, Any], ...]
    user_function: Callable[..., Any]
    is_async: bool
    wants_context: bool
    retry_policy: Mapping[str, Any] | None = None

    @property
    def trigger_arg(self) -> str:
        return str(self.trigger["name"])

    @property
    def http_output(self) -> str | None:
        """Name of the HTTP output binding (``$return`` or an ``Out`` parameter), if any."""
        for binding in self.bindings:
            if binding.get("type") == "http" and str(binding.get("direction", "")).upper() == "OUT":
                return str(binding["name"])
        return None


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    functions: tuple[FunctionSpec, ...]
    skipped: tuple[Skipped, ...]


def load_app(reference: str, *, root: Path) -> Any:
    """Import ``module:attribute`` (default attribute ``app``) with ``root`` first on ``sys.path``."""
    module_name, _, attribute = reference.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attribute or "app")
    except AttributeError as exc:
        raise AttributeError(f"{module_name} has no attribute {attribute or 'app'!r}") from exc


def _functions_of(app: Any) -> list[Any]:
    with _cache_lock:
        cached = _cache.get(id(app))
        if cached is None or cached[0] is not app:
            cached = (app, list(app.get_functions()))
            _cache[id(app)] = cached
        return cached[1]


def _is_out(binding: Mapping[str, Any]) -> bool:
    return str(binding.get("direction", "")).upper() == "OUT"


def _describe(binding: Mapping[str, Any]) -> str:
    direction = "output" if _is_out(binding) else "input"
    return f"{binding.get('type')} {direction} binding {binding.get('name')!r}"


def _spec(function: Any) -> FunctionSpec | Skipped:
    name = str(function.get_function_name())
    document = json.loads(function.get_function_json())
    bindings = tuple(document.get("bindings", []))
    triggers = [b for b in bindings if str(b.get("type", "")).endswith("Trigger")]
    if len(triggers) != 1:
        return Skipped(name, f"expected exactly one trigger, found {len(triggers)}")
    trigger = triggers[0]
    kind = SUPPORTED_TRIGGERS.get(str(trigger["type"]))
    if kind is None:
        return Skipped(name, f"the runner does not serve {trigger['type']} (only HTTP, timer and blob)")
    for binding in bindings:
        if binding is trigger or (kind == "http" and binding.get("type") == "http" and _is_out(binding)):
            continue
        return Skipped(name, f"the runner does not serve the {_describe(binding)}")
    user_function = function.get_user_function()
    parameters = inspect.signature(user_function).parameters
    bound = {str(b["name"]) for b in bindings if b["name"] != "$return"}
    unbound = [p for p in parameters if p not in bound and p != "context"]
    if unbound:
        return Skipped(name, f"parameter(s) {', '.join(unbound)} have no binding")
    missing = sorted(bound - set(parameters))
    if missing:
        return Skipped(name, f"binding(s) {', '.join(missing)} have no parameter")
    retry = None
    if hasattr(function, "get_settings_dict"):
        retry = function.get_settings_dict("retry_policy")
    return FunctionSpec(
        name=name,
        kind=kind,
        trigger=trigger,
        bindings=bindings,
        user_function=user_function,
        is_async=inspect.iscoroutinefunction(user_function),
        wants_context="context" in parameters,
        retry_policy=retry,
    )


def discover(app: Any) -> Discovery:
    """Every function of ``app``, split into those the runner serves and those it skips (with reasons)."""
    functions: list[FunctionSpec] = []
    skipped: list[Skipped] = []
    for function in _functions_of(app):
        result = _spec(function)
        if isinstance(result, Skipped):
            skipped.append(result)
        else:
            functions.append(result)
    return Discovery(tuple(functions), tuple(skipped))
