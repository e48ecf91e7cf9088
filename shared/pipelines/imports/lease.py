"""A renewed lease on an existing input blob: the cross-instance "I am processing this file" marker.

Unlike ``BlobStore.lease`` (for lock blobs, created when missing) this never creates the blob: an input
that is gone (moved by an earlier trigger) must stay gone, not reappear empty and trigger again. While the
lease is held, nobody can overwrite or delete the input without the lease id (the final move passes it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient

from shared.storage import LeaseUnavailableError, keep_lease

__all__ = ["InputGone", "input_lease"]

log = logging.getLogger(__name__)


class InputGone(Exception):
    """The input blob no longer exists (an earlier trigger handled it)."""


@contextmanager
def input_lease(blob: BlobClient, *, seconds: int = 60, etag: str | None = None) -> Iterator[BlobLeaseClient]:
    """Lease ``blob`` for the ``with`` block (renewed every ``seconds / 3``); released on exit.

    ``etag``: only lease that version (a replaced blob is a new drop with its own trigger): InputGone.
    Raises ``LeaseUnavailableError`` when another instance holds it.
    """
    lease = BlobLeaseClient(blob)
    try:
        if etag is None:
            lease.acquire(lease_duration=seconds)
        else:
            from azure.core import MatchConditions

            lease.acquire(lease_duration=seconds, etag=etag, match_condition=MatchConditions.IfNotModified)
    except ResourceNotFoundError as exc:
        raise InputGone(f"{blob.container_name}/{blob.blob_name} is gone") from exc
    except HttpResponseError as exc:
        if exc.status_code == 409:
            raise LeaseUnavailableError(f"{blob.container_name}/{blob.blob_name} is being processed") from exc
        if exc.status_code == 412:
            raise InputGone(
                f"{blob.container_name}/{blob.blob_name} was replaced by a newer version"
            ) from exc
        raise
    # 404: moved away by this very holder; 409: already expired and re-leased by another instance
    with keep_lease(lease, blob.blob_name, seconds / 3, quiet_statuses=(404, 409)):
        yield lease
