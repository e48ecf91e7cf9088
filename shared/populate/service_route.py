"""Records to a JSON custom service operation: one call per record, or one call with every record.

Per record, the body is ``{record_parameter: {...the record...}}`` (a data contract) or the record's fields
mapped to top-level parameters (``parameter_map``), plus the legal entity when configured. A call that
fails (D365's 500 with the X++ error text) fails that record only. With ``whole_file`` the answer is read
per record when it is a list as long as the input (an element with an ``Error``/``Message`` text is a
failure); any other answer counts for every record.

Values are converted to the operation's parameter types when D365 describes the operation
(``service_params``): a value that does not fit fails its record before any call, with the field, the
parameter and the expected type. A data contract (``record_parameter``) or a list (``whole_file``) is sent
as read: the description names its type, not its members' types.

A custom service operation is not idempotent (ref §6), so calls are never repeated after an unknown outcome:
the transport retries only what D365 refused before doing any work (429, failures to connect).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shared.d365.errors import (
    D365AuthError,
    D365ConnectionError,
    D365Error,
    D365HTTPError,
    D365ThrottledError,
    D365TimeoutError,
)
from shared.d365.services import CustomServiceClient
from shared.populate.config import ServiceTarget
from shared.populate.deadline import Deadline, OutOfTime
from shared.populate.records import SourceRecord, plain
from shared.populate.results import PopulateResult, RecordOutcome, RecordResult
from shared.populate.service_params import ParameterError, ParameterTypes, to_parameter

__all__ = ["call_service"]

_OUTCOME_FIELDS = ("outcome", "status", "result")
_ERROR_FIELDS = ("error", "errormessage")
_NOTE_LIMIT = 300


def _field(answer: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    for key, value in answer.items():
        if key.lower() in names:
            return value
    return None


def _verdict(answer: Any) -> tuple[RecordOutcome, str | None]:
    """What one answer says about its record: an error text fails it; a known outcome word is taken."""
    if isinstance(answer, Mapping):
        error = _field(answer, _ERROR_FIELDS)
        if isinstance(error, str) and error.strip():
            return RecordOutcome.FAILED, error.strip()
        said = _field(answer, _OUTCOME_FIELDS)
        if isinstance(said, str) and said.lower() in {"created", "updated", "unchanged"}:
            return RecordOutcome(said.lower()), None
    return RecordOutcome.ACCEPTED, None


def _message(exc: D365Error) -> str:
    """D365's own text (the X++ error) rather than the generic envelope message."""
    if isinstance(exc, D365HTTPError):
        return f"HTTP {exc.status_code}: {exc.inner_message or exc.message}"
    return str(exc)


def _note(answer: Any) -> str | None:
    if answer is None:
        return None
    text = json.dumps(answer, default=str, ensure_ascii=False)
    return text if len(text) <= _NOTE_LIMIT else text[: _NOTE_LIMIT - 3] + "..."


class _Caller:
    def __init__(
        self,
        client: CustomServiceClient,
        target: ServiceTarget,
        legal_entity: str,
        types: ParameterTypes | None,
    ) -> None:
        self.client, self.target, self.legal_entity, self.types = client, target, legal_entity, types

    def typed(self, parameter: str, value: Any, *, from_text: bool, what: str) -> Any:
        """``value`` as ``parameter``'s declared type (as read when the operation is not described)."""
        declared = self.types.of(parameter) if self.types is not None else None
        if declared is None:
            return value
        try:
            return to_parameter(declared, value, from_text=from_text)
        except ParameterError as exc:
            raise ParameterError(f"{what} (parameter {parameter!r}, type {declared}): {exc}") from None

    def payload(self, record: SourceRecord) -> dict[str, Any]:
        """The call's body for one record; raises ParameterError for a value that does not fit."""
        target, values = self.target, record.values
        if target.parameter_map is not None:
            body = {
                param: self.typed(param, values[name], from_text=record.from_text, what=f"field {name!r}")
                for name, param in target.parameter_map
                if name in values
            }
        else:
            body = {target.record_parameter: dict(values)}
        self.add_legal_entity(body)
        return body

    def add_legal_entity(self, body: dict[str, Any]) -> None:
        parameter = self.target.legal_entity_parameter
        if parameter and self.legal_entity:
            body[parameter] = self.typed(
                parameter, self.legal_entity, from_text=True, what="the legal entity"
            )

    def invoke(self, body: Mapping[str, Any]) -> Any:
        t = self.target
        return self.client.call(t.service_group, t.service, t.operation, plain(body))


def _key(record: SourceRecord, key_fields: tuple[str, ...]) -> dict[str, Any]:
    return {name: plain(record.values.get(name)) for name in key_fields}


def _refused_before_work(exc: D365Error) -> bool:
    """D365 did not run the operation: throttled past the retries, or the token was refused / not got."""
    return isinstance(exc, D365ThrottledError | D365AuthError) or not isinstance(
        exc, D365HTTPError | D365ConnectionError | D365TimeoutError
    )


def _unknown_outcome(exc: D365Error) -> bool:
    """No usable answer (5xx, dropped connection, time-out): the operation may have run."""
    return isinstance(exc, D365ConnectionError | D365TimeoutError) or (
        isinstance(exc, D365HTTPError) and exc.status_code >= 500 and not _x_plus_plus_error(exc)
    )


def _x_plus_plus_error(exc: D365HTTPError) -> bool:
    # D365 answers an X++ error thrown by the operation with 500 and the Infolog text in the body: the
    # operation ran and failed (its transaction rolled back), a definite answer
    return exc.status_code == 500 and (bool(exc.inner_message) or (exc.body or "").lstrip().startswith("{"))


MAY_HAVE_RUN = (
    "the call got no usable answer, so the operation may have been processed: not called again "
    "automatically (a custom service cannot be asked what it did); check in D365"
)


def call_service(
    client: CustomServiceClient,
    target: ServiceTarget,
    records: list[SourceRecord],
    *,
    legal_entity: str = "",
    key_fields: tuple[str, ...] = (),
    types: ParameterTypes | None = None,
    deadline: Deadline | None = None,
) -> PopulateResult:
    """Call the operation for ``records`` as ``target`` says; one result per record. ``types``: the
    operation's parameter types (None: not described, values sent as read).

    A call D365 refused before doing any work (429 past the retries, token) or the run's time limit stops
    the run: the records left are ``not_attempted`` (``result.unavailable`` says why). A call without a
    usable answer (5xx without an X++ error, dropped connection) fails its record as ``uncertain`` and stops
    the run too: D365 is in trouble, and the file needs an operator's check."""
    caller = _Caller(client, target, legal_entity, types)
    deadline = deadline or Deadline(None)
    stats = {"calls": 0, "parameters_described": int(types is not None)}
    result = PopulateResult(target.name, target.call, stats=stats)

    def stop(numbered: list[SourceRecord], why: str) -> None:
        result.unavailable = why
        result.records += [
            RecordResult(r.number, _key(r, key_fields), RecordOutcome.NOT_ATTEMPTED, why, r.line)
            for r in numbered
        ]

    def failed(record: SourceRecord, exc: D365Error) -> RecordResult:
        unknown = _unknown_outcome(exc)
        return RecordResult(
            record.number,
            _key(record, key_fields),
            RecordOutcome.FAILED,
            _message(exc),
            record.line,
            MAY_HAVE_RUN if unknown else None,
            uncertain=unknown,
        )

    if target.call == "whole_file":
        body: dict[str, Any] = {target.records_parameter: [dict(r.values) for r in records]}
        try:
            caller.add_legal_entity(body)
        except ParameterError as exc:
            result.records = [
                RecordResult(r.number, _key(r, key_fields), RecordOutcome.FAILED, str(exc), r.line)
                for r in records
            ]
            return result
        try:
            deadline.check()
            result.stats["calls"] = 1
            answer = caller.invoke(body)
        except OutOfTime as exc:
            stop(records, str(exc))
            return result
        except D365Error as exc:
            if _refused_before_work(exc):
                stop(records, f"D365 is unavailable: {_message(exc)}")
            else:
                result.records = [failed(r, exc) for r in records]
                if _unknown_outcome(exc):
                    result.unavailable = f"D365 gave no usable answer: {_message(exc)}"
            return result
        per_record = isinstance(answer, list) and len(answer) == len(records)
        for index, record in enumerate(records):
            own = answer[index] if per_record else answer
            outcome, error = _verdict(own)
            note = _note(own) if per_record else (_note(answer) if index == 0 else None)
            result.records.append(
                RecordResult(record.number, _key(record, key_fields), outcome, error, record.line, note)
            )
        return result
    for index, record in enumerate(records):
        try:
            body = caller.payload(record)
        except ParameterError as exc:
            result.records.append(
                RecordResult(
                    record.number, _key(record, key_fields), RecordOutcome.FAILED, str(exc), record.line
                )
            )
            continue
        try:
            deadline.check()
            result.stats["calls"] += 1
            answer = caller.invoke(body)
        except OutOfTime as exc:
            stop(records[index:], str(exc))
            break
        except D365Error as exc:
            if _refused_before_work(exc):
                stop(records[index:], f"D365 is unavailable: {_message(exc)}")
                break
            result.records.append(failed(record, exc))
            if _unknown_outcome(exc):
                stop(records[index + 1 :], f"D365 gave no usable answer: {_message(exc)}")
                break
            continue
        outcome, error = _verdict(answer)
        result.records.append(
            RecordResult(record.number, _key(record, key_fields), outcome, error, record.line, _note(answer))
        )
    return result
