"""The handler registry: which handlers run for a business event, from configuration and from Python.

Configuration (``BUSINESS_EVENTS_HANDLERS``, see ``handler_config``) names handler *types*; the built-in
types are ``archive`` (the default: the raw event is already archived on receipt, nothing else to do),
``forward_http``, ``forward_blob`` and ``enrich``. Python code adds types or binds handlers directly to a
business event id, at import time of the function app::

    from shared.events.handlers import default_registry

    @default_registry.handler("PurchaseOrderConfirmedBusinessEvent", skip_out_of_order=True)
    def update_erp(event, context): ...

For an event, the configured handlers of its id (else those of ``"*"``) run first, then the Python ones of
its id and of ``"*"``; with none at all, ``archive``. Each handler has a name, used to record which
handlers already succeeded, so a retry only re-runs the ones that did not.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared.events.enrich import Enrich
from shared.events.forward import ForwardBlob, ForwardHttp
from shared.events.handler_api import (
    Handler,
    HandlerContext,
    HandlerFactory,
    HandlerResult,
    PermanentHandlerError,
)
from shared.events.handler_config import DEFAULT_KEY, HandlerSpec
from shared.events.model import BusinessEvent

__all__ = ["BoundHandler", "HandlerRegistry", "archive", "default_registry", "options_problem"]


def archive(event: BusinessEvent, context: HandlerContext) -> HandlerResult:
    """The default: the raw event was archived when it was received; nothing more to do."""
    return HandlerResult(f"archived as {context.raw_blob}", (context.raw_blob,))


@dataclass(frozen=True)
class BoundHandler:
    name: str
    run: Handler
    skip_out_of_order: bool = False


class HandlerRegistry:
    """Handler types (for configuration) and handlers bound to business event ids (from Python)."""

    def __init__(self, *, builtins: bool = True) -> None:
        self._types: dict[str, HandlerFactory] = {}
        self._bound: dict[str, list[BoundHandler]] = {}
        self._built: dict[int, tuple[HandlerSpec, Handler]] = {}
        self._lock = threading.Lock()
        if builtins:
            self.register_type("archive", lambda options: archive)
            self.register_type("forward_http", ForwardHttp)
            self.register_type("forward_blob", ForwardBlob)
            self.register_type("enrich", Enrich)

    def register_type(self, name: str, factory: HandlerFactory) -> None:
        """A handler type configuration can name; ``factory(options)`` raises ValueError for bad options."""
        with self._lock:
            self._types[name] = factory

    def type_names(self) -> set[str]:
        with self._lock:
            return set(self._types)

    def register(
        self,
        business_event_id: str,
        handler: Handler,
        *,
        name: str | None = None,
        skip_out_of_order: bool = False,
    ) -> None:
        """Run ``handler`` for every event with this id (``"*"``: every event)."""
        label = name or getattr(handler, "__qualname__", None) or type(handler).__name__
        with self._lock:
            bound = self._bound.setdefault(business_event_id, [])
            if any(b.name == label for b in bound):
                raise ValueError(f"a handler named {label!r} is already registered for {business_event_id}")
            bound.append(BoundHandler(label, handler, skip_out_of_order))

    def handler(
        self, business_event_id: str, *, name: str | None = None, skip_out_of_order: bool = False
    ) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`register`."""

        def decorate(function: Handler) -> Handler:
            self.register(business_event_id, function, name=name, skip_out_of_order=skip_out_of_order)
            return function

        return decorate

    def unregister(self, business_event_id: str, name: str) -> None:
        with self._lock:
            bound = self._bound.get(business_event_id, [])
            self._bound[business_event_id] = [b for b in bound if b.name != name]

    def resolve(
        self, business_event_id: str | None, config: Mapping[str, tuple[HandlerSpec, ...]]
    ) -> list[BoundHandler]:
        """The handlers for one event, in order (raises PermanentHandlerError for a bad configuration)."""
        specs = config.get(business_event_id or "", None)
        if specs is None:
            specs = config.get(DEFAULT_KEY, ())
        handlers = [BoundHandler(spec.name, self._build(spec), spec.skip_out_of_order) for spec in specs]
        with self._lock:
            for key in (business_event_id, DEFAULT_KEY):
                if key:
                    handlers.extend(self._bound.get(key, []))
        if not handlers:
            handlers.append(BoundHandler("archive", archive))
        names = [h.name for h in handlers]
        if len(set(names)) != len(names):
            raise PermanentHandlerError(f"two handlers for {business_event_id} share a name: {names}")
        return handlers

    def _build(self, spec: HandlerSpec) -> Handler:
        with self._lock:
            built = self._built.get(id(spec))
            if built is not None and built[0] is spec:
                return built[1]
            factory = self._types.get(spec.type)
        if factory is None:
            raise PermanentHandlerError(f"handler {spec.name}: unknown type {spec.type!r}")
        try:
            handler = factory(spec.options)
        except (ValueError, TypeError) as exc:
            raise PermanentHandlerError(
                f"handler {spec.name} ({spec.type}) is misconfigured: {exc}"
            ) from None
        with self._lock:
            self._built[id(spec)] = (spec, handler)  # the spec is kept, so its id cannot be reused
        return handler


#: The process-wide registry the pipeline uses unless given another one.
default_registry = HandlerRegistry()


def options_problem(spec: HandlerSpec, registry: HandlerRegistry | None = None) -> str | None:
    """Build a configured handler once to report bad options at start-up (None when fine)."""
    try:
        (registry or default_registry)._build(spec)
    except PermanentHandlerError as exc:
        return str(exc)
    return None
