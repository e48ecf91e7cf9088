"""Where exports and their state live (blob names), and the deterministic ids they are keyed by.

Exports container::

    {activity}/{yyyy}/{mm}/{dd}/{correlation-id}.zip            the dequeued package, stored once
    {activity}/{yyyy}/{mm}/{dd}/{correlation-id}.zip.status.json what happened (shared.status record)
    {activity}/{yyyy}/{mm}/{dd}/{correlation-id}/{entry}         unpacked files (optional)
    {activity}/{yyyy}/{mm}/{dd}/{correlation-id}.manifest.json   entities, rows, sizes, sha256 (optional)
    dmf/{definition-group}/{yyyy}/{mm}/{dd}/{execution-id}.zip (+ .zip.status.json)

State container::

    exports/{activity-id}/{correlation-id}.json    first sight of a message: the path chosen for it
    dmf-exports/{job}/{execution-id}.json          one DMF export's progress (ETag-guarded updates)
    locks/exports/{activity-id}, locks/dmf-exports/{job}   leases: one instance per activity / job

The date in a dequeued package's name is the day the message was first seen. D365 re-offers an un-acked
message 30 minutes later (maybe the next day) and a message carries no first-dequeue date, so the name is
chosen once, in a state record created with If-None-Match, and every redelivery reads it back from there.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "dmf_execution_id",
    "dmf_lock_name",
    "dmf_package_name",
    "dmf_period_of",
    "dmf_period_start",
    "dmf_state_name",
    "dmf_state_prefix",
    "export_lock_name",
    "export_state_name",
    "manifest_name",
    "package_name",
    "safe_correlation_id",
    "safe_segment",
    "unpacked_prefix",
]

_CORRELATION = re.compile(r"^[A-Za-z0-9-]{1,100}$")
_UNSAFE_SEGMENT = re.compile(r"[\x00-\x1f\x7f/\\]")
_STAMP = "%Y%m%dT%H%MZ"


def safe_correlation_id(value: str) -> str:
    """The correlation id as used in names (lower case, braces dropped); ValueError if it is not id-like."""
    cleaned = value.strip().strip("{}").lower()
    if not _CORRELATION.match(cleaned):
        raise ValueError(
            f"correlation id {value[:100]!r} is not a GUID-like id; refusing to use it in a name"
        )
    return cleaned


def safe_segment(value: str) -> str:
    """One path segment from free text (a data project name): separators and controls become ``_``."""
    cleaned = _UNSAFE_SEGMENT.sub("_", value.strip())
    if cleaned in ("", ".", ".."):
        raise ValueError(f"{value!r} cannot be used as a folder name")
    return cleaned


def _day(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"{moment:%Y}/{moment:%m}/{moment:%d}"


def package_name(activity: str, first_seen: datetime, correlation_id: str, extension: str = "zip") -> str:
    return f"{activity}/{_day(first_seen)}/{correlation_id}.{extension}"


def _stem(package: str) -> str:
    return package.rsplit(".", 1)[0]


def unpacked_prefix(package: str) -> str:
    """Folder (with trailing ``/``) for the files unpacked from ``package``."""
    return _stem(package) + "/"


def manifest_name(package: str) -> str:
    return _stem(package) + ".manifest.json"


def export_state_name(activity_key: str, correlation_id: str) -> str:
    return f"exports/{activity_key}/{correlation_id}.json"


def export_lock_name(activity_key: str) -> str:
    return f"locks/exports/{activity_key}"


# -- DMF package exports


def dmf_period_start(now: datetime, period_minutes: int, offset_minutes: int = 0) -> datetime:
    """Start of the period ``now`` falls in: periods of ``period_minutes`` from midnight UTC + offset."""
    now = now.astimezone(UTC)
    epoch = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(minutes=offset_minutes)
    period = timedelta(minutes=period_minutes)
    return epoch + ((now - epoch) // period) * period


def dmf_execution_id(job: str, period_start: datetime) -> str:
    """``{job}-{yyyymmddThhmmZ}``: the same for every timer run of one period, so a retry re-attaches."""
    return f"{job}-{period_start.astimezone(UTC).strftime(_STAMP)}"


def dmf_period_of(execution_id: str) -> datetime:
    """The period start encoded in an execution id made by :func:`dmf_execution_id`."""
    stamp = execution_id.rsplit("-", 1)[-1]
    return datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC)


def dmf_package_name(definition_group: str, period_start: datetime, execution_id: str) -> str:
    return f"dmf/{safe_segment(definition_group)}/{_day(period_start)}/{execution_id}.zip"


def dmf_state_prefix(job: str) -> str:
    return f"dmf-exports/{job}/"


def dmf_state_name(job: str, execution_id: str) -> str:
    return f"{dmf_state_prefix(job)}{execution_id}.json"


def dmf_lock_name(job: str) -> str:
    return f"locks/dmf-exports/{job}"
