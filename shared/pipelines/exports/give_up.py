"""Exports: a dequeued message whose package never downloads is given up on, not re-tried forever.

D365 offers an un-acked message again every 30 minutes, for ever (ref §4.1). A package that cannot be
downloaded (deleted or expired on D365's side, a download endpoint that keeps failing) would otherwise come
back every 30 minutes with another ``EXPORT_DOWNLOAD_FAILED``. So:

- each failed download is **counted** in the message's state record
  (``state/exports/{activity-id}/{correlation-id}.json``: ``download_failures``, ``first_failure``,
  ``last_failure``, ``last_error``, ``d365``) with an ETag-guarded read-modify-write, so every instance and
  every run adds to one count (the per-activity lease already serialises runs; the ETag does not rely on it);
- at ``EXPORT_DOWNLOAD_MAX_ATTEMPTS`` the pipeline **gives up**: a ``failed`` status record where the
  package would have been (``{package}.status.json``, the exports' error location that ``ops status``
  lists) with D365's own words (the download's answer, the dequeue body's ``IsDownLoadFileExist`` /
  ``FileDownLoadErrorMessage``), the attempts and first/last seen; ``EXPORT_MESSAGE_GIVEN_UP`` once;
- then, with ``EXPORT_GIVE_UP_ACK`` (default true), it **acks**. The choice: an ack tells D365 "exported
  file acknowledged as downloaded" (ref §4.4, ``Acked``), which is not true — but after ~5 hours of
  failures the package is unreadable, and without the ack D365 re-offers it every 30 minutes for ever.
  Nothing is lost by acking: the data is still in D365 (the export can be run again), and the status
  record says exactly which message was given up and why. ``EXPORT_GIVE_UP_ACK=false`` leaves the message
  with D365 instead: every re-offer then tries the download once more, quietly (INFO, no new alert), and
  stores the package as usual if it has become readable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shared.d365.connector import DequeuedMessage
from shared.d365.errors import D365Error, D365HTTPError
from shared.redact import redact_text, redact_url
from shared.storage import BlobStore

__all__ = ["DownloadFailure", "count_failure", "give_up_text", "mark_given_up"]

_MAX_TEXT = 1000


@dataclass(frozen=True)
class DownloadFailure:
    """One failed download: our summary and D365's own words."""

    error: str
    d365: dict[str, Any]

    @classmethod
    def of(cls, exc: D365Error, message: DequeuedMessage) -> DownloadFailure:
        d365: dict[str, Any] = {"download_message": redact_text(exc.message)[:_MAX_TEXT]}
        if isinstance(exc, D365HTTPError):
            d365["download_status"] = exc.status_code
            if exc.inner_message:
                d365["download_message"] = redact_text(exc.inner_message)[:_MAX_TEXT]
        try:
            offered = json.loads(message.raw)
        except ValueError:
            offered = None
        if isinstance(offered, dict):  # what the dequeue itself said about the file (ref §4.2 example)
            if "IsDownLoadFileExist" in offered:
                d365["is_download_file_exist"] = offered["IsDownLoadFileExist"]
            said = offered.get("FileDownLoadErrorMessage")
            if said:
                d365["file_download_error_message"] = redact_text(str(said))[:_MAX_TEXT]
        d365["download_location"] = redact_url(message.download_location)
        if message.last_dequeued:
            d365["last_dequeued"] = message.last_dequeued
        return cls(redact_text(str(exc))[:_MAX_TEXT], d365)


def count_failure(
    store: BlobStore, container: str, name: str, failure: DownloadFailure, at: str
) -> dict[str, Any]:
    """Add one failed download to the message's state record; the record as written."""

    def change(current: Any) -> Any:
        record = dict(current or {})
        record["download_failures"] = int(record.get("download_failures", 0)) + 1
        record.setdefault("first_failure", at)
        record.update(last_failure=at, last_error=failure.error, d365=failure.d365)
        return record

    return dict(store.update_json(container, name, change))


def mark_given_up(store: BlobStore, container: str, name: str, at: str, acked: bool) -> dict[str, Any]:
    """Note the give-up (its first time stays) and, once it happened, the ack."""

    def change(current: Any) -> Any:
        record = dict(current or {})
        record.setdefault("given_up_at", at)
        if acked:
            record["given_up_acked_at"] = at
        return record

    return dict(store.update_json(container, name, change))


def give_up_text(state: dict[str, Any], *, acked: bool, ack_error: str | None, ack_wanted: bool) -> str:
    """The status record's message: what failed, how often, since when, and what happens next."""
    failures = int(state.get("download_failures", 0))
    text = (
        f"given up: the package could not be downloaded in {failures} attempt(s) between "
        f"{state.get('first_failure')} and {state.get('last_failure')} "
        f"(first seen {state.get('first_seen')}); last error: {state.get('last_error')}"
    )
    if acked:
        return f"{text}. Acknowledged so that D365 stops offering it; run the export again in D365 if needed"
    if ack_wanted:
        return f"{text}. The ack failed ({ack_error}); the next offer is acked without a download"
    return f"{text}. Not acked (EXPORT_GIVE_UP_ACK=false): D365 keeps offering it every 30 minutes"
