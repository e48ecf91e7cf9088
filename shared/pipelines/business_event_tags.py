"""The sweep's blob index tags on raw business events: marking processing as begun, and coping when storage
refuses tags (see ``business_event_sweep`` for why tags)."""

from __future__ import annotations

import logging
import time

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobLeaseClient

from shared.context import AppContext
from shared.events.layout import STARTED_TAGS
from shared.events.settings import BusinessEventSettings
from shared.logs import log_event
from shared.redact import redact_text

__all__ = ["TagRefusal", "mark_started", "tag_refusal"]

log = logging.getLogger(__name__)

_PAUSE_SECONDS = 600.0


class TagRefusal:
    """Storage refused blob index tags (403: the identity lacks tag rights; 400: an account without them).

    Then this process stores and processes events without tags for ``_PAUSE_SECONDS`` and tries again (a
    role assignment may still be propagating): one ``EVENT_TAGS_REFUSED`` line per pause, not one per event.
    """

    def __init__(self) -> None:
        self._until = 0.0  # monotonic time; a float assignment is atomic, a race only logs twice

    def active(self) -> bool:
        return time.monotonic() < self._until

    def note(self, refusal: HttpResponseError) -> None:
        if self.active():
            return
        self._until = time.monotonic() + _PAUSE_SECONDS
        log_event(
            log,
            "EVENT_TAGS_REFUSED",
            logging.ERROR,
            "blob storage refused blob index tags, so the sweep for missed business events cannot see new "
            "events (they are still stored and processed by the trigger); grant Storage Blob Data Owner or "
            f"set BUSINESS_EVENTS_SWEEP_MIN_AGE_SECONDS=0: {redact_text(str(refusal).splitlines()[0])}",
            status=refusal.status_code,
        )

    def reset(self) -> None:
        self._until = 0.0


tag_refusal = TagRefusal()


def mark_started(
    context: AppContext, settings: BusinessEventSettings, name: str, lease: BlobLeaseClient | None = None
) -> None:
    """Tag the raw blob ``processing=started``: the sweep stops looking at it. Best effort: the sweep finds
    a blob still tagged ``pending`` whose record exists and tags it then. Tags leave the blob's ETag and
    last-modified time alone, so no blob trigger fires again."""
    if not settings.sweep_enabled or tag_refusal.active():
        return
    try:
        context.store.blob(settings.raw_container, name).set_blob_tags(dict(STARTED_TAGS), lease=lease)
    except ResourceNotFoundError:
        pass
    except HttpResponseError as exc:
        if exc.status_code in (400, 403):
            tag_refusal.note(exc)
        else:
            log.warning("raw event %s not tagged as started (the sweep will): %s", name, exc.reason)
    except AzureError as exc:
        log.warning("raw event %s not tagged as started (the sweep will): %s", name, exc)
