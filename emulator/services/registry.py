"""Custom-service registry: operations, their X++ signatures, argument binding, D365-shaped faults (ref §6).

A call's JSON body is an object keyed by the X++ parameter names; data-contract parameters are nested objects
keyed by data-member names. The registry binds and converts that body, runs the handler, and serialises the
return value directly (no ``{"value": ...}`` wrapper). Anything that goes wrong becomes a ``ServiceFault``,
which the routes answer with HTTP 500: an X++ service cannot choose its status code [S34].
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from emulator.state import Principal

__all__ = [
    "DataContract",
    "Handler",
    "Parameter",
    "ServiceCall",
    "ServiceFault",
    "ServiceOperation",
    "ServiceRegistry",
    "XppError",
    "serialize",
]

FAULT_PREFIX = "An exception occured when invoking the operation - "  # sic: D365's own spelling


class ServiceFault(Exception):
    """A failed call, answered with HTTP 500 ``{"Message", "ExceptionType", "ActivityId"}``.

    Body shape UNCONFIRMED in Microsoft docs (ref §6); it is the one third-party clients capture from D365,
    e.g. ``{"Message": "An exception occured when invoking the operation - …", "ExceptionType":
    "DuplicateKeyException", "ActivityId": "…"}``. ``shared.d365.errors.parse_error_body`` reads ``Message``.
    """

    def __init__(self, message: str, exception_type: str) -> None:
        super().__init__(message)
        self.message = message
        self.exception_type = exception_type

    def body(self) -> dict[str, Any]:
        activity = str(uuid.uuid4())
        return {"Message": self.message, "ExceptionType": self.exception_type, "ActivityId": activity}


class XppError(ServiceFault):
    """What a handler raises for X++ ``throw error("…")``: the infolog text, prefixed as D365 does."""

    def __init__(self, message: str, exception_type: str = "ErrorException") -> None:
        super().__init__(FAULT_PREFIX + message, exception_type)
        self.xpp_message = message


@dataclass(frozen=True)
class Parameter:
    """One X++ parameter: its name on the wire and its X++ type name.

    Types: ``str``, ``int``, ``int64``, ``real``, ``boolean``, ``date``, ``utcdatetime``, ``guid``,
    ``anytype``, a registered data-contract name, or ``List<T>`` for a collection of any of those.
    """

    name: str
    type: str


@dataclass(frozen=True)
class DataContract:
    """An X++ data contract: ``[DataMember]`` names and their types (see Parameter for type names)."""

    name: str
    members: Mapping[str, str]


@dataclass(frozen=True)
class ServiceCall:
    """What a handler receives: converted arguments and the caller's session."""

    operation: ServiceOperation
    args: Mapping[str, Any]
    principal: Principal | None
    company: str  # the caller's default company: custom services run in it (lowercase dataAreaId)

    def __getitem__(self, name: str) -> Any:
        return self.args[name]


Handler = Callable[[ServiceCall], Any]


@dataclass(frozen=True)
class ServiceOperation:
    group: str
    service: str
    name: str
    handler: Handler
    parameters: tuple[Parameter, ...] = ()
    returns: str = "void"

    def describe(self) -> dict[str, Any]:
        """The GET listing of one operation (third-party shape, ref §6)."""
        return {
            "Parameters": [{"Name": p.name, "Type": p.type} for p in self.parameters],
            "Return": {"Name": "return", "Type": self.returns},
        }


@dataclass
class _Service:
    name: str
    operations: dict[str, ServiceOperation] = field(default_factory=dict)


@dataclass
class _Group:
    name: str
    services: dict[str, _Service] = field(default_factory=dict)


_LIST = re.compile(r"^List<(?P<item>.+)>$")


class ServiceRegistry:
    """Service groups → services → operations, looked up case-insensitively; thread-safe.

    ``ServiceRegistry()`` comes with the emulator's sample services (``emulator.services.samples``);
    ``register`` adds more from code. ``reset`` restores the run-time state of every service (via the hooks
    given to ``on_reset``) but keeps the registrations.
    """

    def __init__(self, *, samples: bool = True) -> None:
        self._lock = threading.RLock()
        self._groups: dict[str, _Group] = {}
        self._contracts: dict[str, DataContract] = {}
        self._reset_hooks: list[Callable[[], None]] = []
        if samples:
            from emulator.services.samples import register_samples

            register_samples(self)

    # -- registration ---------------------------------------------------------------------------------------

    def register(
        self,
        group: str,
        service: str,
        operation: str,
        handler: Handler,
        *,
        parameters: Iterable[Parameter | tuple[str, str]] = (),
        returns: str = "void",
        replace: bool = False,
    ) -> ServiceOperation:
        """Add ``POST /api/services/{group}/{service}/{operation}``; the handler gets a ServiceCall."""
        params = tuple(p if isinstance(p, Parameter) else Parameter(*p) for p in parameters)
        names = [p.name.lower() for p in params]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate parameter names in {operation}")
        op = ServiceOperation(group, service, operation, handler, params, returns)
        with self._lock:
            grp = self._groups.setdefault(group.lower(), _Group(group))
            svc = grp.services.setdefault(service.lower(), _Service(service))
            if operation.lower() in svc.operations and not replace:
                raise ValueError(f"{group}/{service}/{operation} is already registered")
            svc.operations[operation.lower()] = op
        return op

    def register_contract(self, contract: DataContract) -> None:
        with self._lock:
            self._contracts[contract.name.lower()] = contract

    def on_reset(self, hook: Callable[[], None]) -> None:
        with self._lock:
            self._reset_hooks.append(hook)

    def reset(self) -> None:
        """Forget state changed at run time (sample data, posted documents); registrations stay."""
        with self._lock:
            hooks = list(self._reset_hooks)
        for hook in hooks:
            hook()

    # -- lookup ---------------------------------------------------------------------------------------------

    def groups(self) -> list[str]:
        with self._lock:
            return sorted((g.name for g in self._groups.values()), key=str.lower)

    def services(self, group: str) -> list[str] | None:
        with self._lock:
            grp = self._groups.get(group.lower())
            return None if grp is None else sorted((s.name for s in grp.services.values()), key=str.lower)

    def operations(self, group: str, service: str) -> list[str] | None:
        with self._lock:
            grp = self._groups.get(group.lower())
            svc = grp.services.get(service.lower()) if grp else None
            return None if svc is None else sorted((o.name for o in svc.operations.values()), key=str.lower)

    def find(self, group: str, service: str, operation: str) -> ServiceOperation | None:
        with self._lock:
            grp = self._groups.get(group.lower())
            svc = grp.services.get(service.lower()) if grp else None
            return svc.operations.get(operation.lower()) if svc else None

    # -- calls ----------------------------------------------------------------------------------------------

    def invoke(
        self, operation: ServiceOperation, body: bytes, *, principal: Principal | None, company: str
    ) -> Any:
        """Bind ``body`` to the operation's parameters, run the handler, return the JSON-ready result."""
        args = self.bind(operation, body)
        call = ServiceCall(operation, args, principal, company.lower())
        try:
            result = operation.handler(call)
        except ServiceFault:
            raise
        except Exception as exc:  # a bug in a handler surfaces like an unhandled CLR exception in D365
            raise ServiceFault(FAULT_PREFIX + str(exc), type(exc).__name__) from exc
        return serialize(result)

    def bind(self, operation: ServiceOperation, body: bytes) -> dict[str, Any]:
        """Parse the JSON body and convert each parameter; missing or unknown names are faults.

        Missing → "Parameter 'x' is not found within the request content body." (the D365 text third-party
        tools report). Unknown names are refused too (UNCONFIRMED: chosen so typos fail loudly).
        """
        data = _parse_body(body)
        by_name = {p.name.lower(): p for p in operation.parameters}
        for key in data:
            if key.lower() not in by_name:
                raise ServiceFault(
                    f"Parameter '{key}' is not a parameter of operation '{operation.name}'.",
                    "ArgumentException",
                )
        supplied = {key.lower(): value for key, value in data.items()}
        args: dict[str, Any] = {}
        for param in operation.parameters:
            if param.name.lower() not in supplied:
                raise ServiceFault(
                    f"Parameter '{param.name}' is not found within the request content body.",
                    "ArgumentException",
                )
            args[param.name] = self.convert(supplied[param.name.lower()], param.type, param.name)
        return args

    def convert(self, value: Any, type_name: str, path: str) -> Any:
        """Convert one JSON value to its X++ type the way Newtonsoft would, or raise a fault."""
        list_match = _LIST.match(type_name)
        if list_match:
            if value is None:
                return None
            if not isinstance(value, list):
                raise _conversion_fault(value, type_name, path)
            item = list_match.group("item")
            return [self.convert(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        converter = _PRIMITIVES.get(type_name.lower())
        if converter is not None:
            if value is None:
                return _DEFAULTS.get(type_name.lower())
            try:
                return converter(value)
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise _conversion_fault(value, type_name, path) from exc
        with self._lock:
            contract = self._contracts.get(type_name.lower())
        if contract is None:
            return value  # an unregistered class type: pass the JSON through
        if value is None:
            return None
        if not isinstance(value, dict):
            raise _conversion_fault(value, type_name, path)
        supplied = {k.lower(): v for k, v in value.items()}
        # Data contracts ignore unknown members and leave missing ones at their default (DataContract rules).
        return {
            member: self.convert(supplied.get(member.lower()), member_type, f"{path}.{member}")
            for member, member_type in contract.members.items()
        }


# -- JSON body and conversions ------------------------------------------------------------------------------


def _parse_body(body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8-sig", errors="replace").strip()
    if not text:
        return {}  # e.g. GetUserSessionInfo with Content-Length: 0 [S26]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServiceFault(
            f"{FAULT_PREFIX}Unexpected character encountered while parsing the request content body: "
            f"{exc.msg}. Path '', line {exc.lineno}, position {exc.colno}.",
            "JsonReaderException",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ServiceFault(
            f"{FAULT_PREFIX}The request content body must be a JSON object keyed by parameter name.",
            "JsonSerializationException",
        )
    return data


def _conversion_fault(value: Any, type_name: str, path: str) -> ServiceFault:
    shown = json.dumps(value)[:200]
    return ServiceFault(
        f"{FAULT_PREFIX}Error converting value {shown} to type '{type_name}'. Path '{path}'.",
        "JsonSerializationException",
    )


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(value)
    return str(value)


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(value)


def _to_real(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(Decimal(value.strip()))
    raise TypeError(value)


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeError(value)


_WCF_DATE = re.compile(r"^/Date\((?P<ms>-?\d+)(?P<offset>[+-]\d{4})?\)/$")


def _to_datetime(value: Any) -> datetime:
    """ISO 8601 (with or without offset; naive means UTC) or WCF ``/Date(ms)/``; returns an aware UTC time."""
    if not isinstance(value, str):
        raise TypeError(value)
    wcf = _WCF_DATE.match(value.strip())
    if wcf:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(wcf.group("ms")))
    parsed = datetime.fromisoformat(value.strip().replace("z", "Z"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _to_date(value: Any) -> date:
    if isinstance(value, str) and "T" not in value and "/Date(" not in value:
        return date.fromisoformat(value.strip())
    return _to_datetime(value).date()


def _to_guid(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(value)
    return str(uuid.UUID(value.strip()))


_PRIMITIVES: dict[str, Callable[[Any], Any]] = {
    "str": _to_str,
    "int": _to_int,
    "int64": _to_int,
    "real": _to_real,
    "boolean": _to_bool,
    "utcdatetime": _to_datetime,
    "date": _to_date,
    "guid": _to_guid,
    "anytype": lambda value: value,
}
# X++ defaults for a null/missing primitive (dates stay None: X++ "no date").
_DEFAULTS: dict[str, Any] = {"str": "", "int": 0, "int64": 0, "real": 0.0, "boolean": False}


def serialize(value: Any) -> Any:
    """Make a handler's result JSON-ready the way D365 (Newtonsoft) writes it.

    Objects get ``"$id"`` first (D365 serialises with reference preservation; third-party captures show
    ``{"$id": "1", ...}``); dates become ISO strings; Decimals become numbers.
    """
    counter = [0]

    def walk(item: Any) -> Any:
        if isinstance(item, Mapping):
            counter[0] += 1
            out: dict[str, Any] = {"$id": str(counter[0])}
            for key, val in item.items():
                if key != "$id":
                    out[str(key)] = walk(val)
            return out
        if isinstance(item, list | tuple):
            return [walk(v) for v in item]
        if isinstance(item, datetime):
            return format_utcdatetime(item)
        if isinstance(item, date):
            return f"{item.isoformat()}T00:00:00"
        if isinstance(item, Decimal):
            return float(item)
        return item

    return walk(value)


def format_utcdatetime(value: datetime) -> str:
    """``2024-05-01T13:00:00Z`` when aware, no suffix when local (naive); X++ keeps whole seconds."""
    text = value.replace(microsecond=0, tzinfo=None).isoformat()
    return text + "Z" if value.tzinfo is not None else text
