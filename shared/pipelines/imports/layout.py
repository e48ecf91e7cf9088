"""Where imports and their state live (blob names), and the deterministic ids they are keyed by.

Containers (names are settings)::

    inbound/  {prefix}[{company}/]{file}                           users drop files here
    archive/  {route}/{yyyy}/{mm}/{dd}/{job}/{file} (+ .status.json) D365 imported it
    errors/   {route}/{yyyy}/{mm}/{dd}/{job}/{file} (+ .status.json) rejected, failed, or needs a check
              {route}/{yyyy}/{mm}/{dd}/{job}/d365/...                D365's error files for it
    state/    ledger/{target}/{sha256}.json    one per target + content: conditional create = "sent once"
              ledger/drops/{drop}.json         this dropped blob version -> its ledger entry, its own job
              jobs/{job}.json                  in-flight job: ids, D365 status, status record (If-Match)
              inflight/{job}/{file}            the input while D365 works on it (moved there after the job
                                               record is written: the monitor waits while the drop is
                                               still in inbound)
              deferred/{container}/{name}.status.json  why a file is still in inbound, attempts so far
                                               (deferrals.py)
              locks/import-from-package        lease + metadata: one ImportFromPackage at a time, app-wide
              locks/import-monitor             lease: one monitor run at a time
              resubmissions/{id}.json          one operator re-submission of a failed input (resubmit.py):
                                               created If-None-Match, phase requested -> placed

A ledger entry's fields beside ``state``/``job_id``/``generation``: ``resubmission`` (an operator's
one-shot permit naming the inbound blob the input is put back as), ``resubmission_of`` (the permit the
current generation used up), ``resubmissions`` (how many re-submissions took the entry over) and
``unconfirmed`` (``since``/``checks``: a ``sending`` entry whose ImportFromPackage answer was lost).

``{job}`` is ``{route}-{company}-{sha256[:16]}`` (company ``_``: the caller's default company; ``-r{n}``
for the n-th deliberate re-import; at most ~73 characters, shorter than the ``{project}-{timestamp}-{guid}``
execution ids Microsoft's RIS tool sends): the DMF execution id, so a retry after a crash re-attaches to
the same D365 job instead of starting another one. The company is in it because the ledger key is (D365
target incl. company, content): the same file for two companies is two imports and needs two execution
ids (D365 refuses a second job with a used id). A company has no ``-`` and is always there, so the id
is one-to-one with (route, company, content, generation): :func:`job_route` reads the route back. Ids
of older versions (``{route}-{sha256[:16]}``) are still read. Files rejected before
their content was hashed use ``drop-{drop id}`` instead. The folder per job keeps two files with the
same name dropped on the same day apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection
from datetime import UTC, datetime
from urllib.parse import quote

__all__ = [
    "IMPORT_LOCK",
    "JOBS_PREFIX",
    "MONITOR_LOCK",
    "drop_id",
    "drop_name",
    "error_file_name",
    "external_id",
    "final_name",
    "inflight_name",
    "job_id",
    "job_name",
    "job_route",
    "ledger_name",
    "target_slug",
]

IMPORT_LOCK = "locks/import-from-package"
MONITOR_LOCK = "locks/import-monitor"
JOBS_PREFIX = "jobs/"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
DEFAULT_COMPANY = "_"  # in a job id: no company given (routing's legal entities are [a-z0-9]{1,10})
_JOB_ID = re.compile(r"^(?P<route>.+)-(?:[a-z0-9]{1,10}|_)-[0-9a-f]{16}(?:-r\d+)?$")
_OLD_JOB_ID = re.compile(r"^(?P<route>.+)-[0-9a-f]{16}(?:-r\d+)?$")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def job_id(route: str, sha256: str, generation: int = 1, *, legal_entity: str = "") -> str:
    """Deterministic job (and DMF execution) id of one import of this content through this route into
    this company (``legal_entity``: lower case, as routing yields it; "" = the caller's default company)."""
    base = f"{route}-{legal_entity or DEFAULT_COMPANY}-{sha256[:16]}"
    return base if generation <= 1 else f"{base}-r{generation}"


def job_route(job_id: str, routes: Collection[str] = ()) -> str | None:
    """The route name inside a job id (None if it is not one); no read needed. An id of an older version
    (no company) can read like a shorter route plus a company: the one in ``routes`` (route names) wins."""
    found = [m.group("route") for m in (_JOB_ID.match(job_id), _OLD_JOB_ID.match(job_id)) if m]
    return next((name for name in found if name in routes), found[0] if found else None)


def drop_id(container: str, name: str, etag: str) -> str:
    """One dropped blob version: the same for every trigger of it, different for a re-drop."""
    return _digest(f"{container}/{name}|{etag.strip(chr(34))}")[:24]


def target_slug(target_key: str) -> str:
    """A blob-name-safe, collision-free folder for a ledger target key."""
    readable = _UNSAFE.sub("-", target_key).strip("-")[:80]
    return f"{readable}-{_digest(target_key)[:10]}"


def ledger_name(target_key: str, sha256: str) -> str:
    return f"ledger/{target_slug(target_key)}/{sha256}.json"


def drop_name(drop: str) -> str:
    return f"ledger/drops/{drop}.json"


def job_name(job: str) -> str:
    return f"{JOBS_PREFIX}{job}.json"


def inflight_name(job: str, file_name: str) -> str:
    return f"inflight/{job}/{file_name}"


def final_name(route: str, when: datetime, folder: str, file_name: str) -> str:
    """The input's name in the archive or errors container."""
    day = when.astimezone(UTC)
    return f"{route}/{day:%Y}/{day:%m}/{day:%d}/{folder}/{file_name}"


def error_file_name(final: str, label: str) -> str:
    """Where a D365 error file for the input stored as ``final`` goes (next to it, under ``d365/``)."""
    folder = final.rsplit("/", 1)[0]
    return f"{folder}/d365/{_UNSAFE.sub('_', label).strip('_')}"


def external_id(file_name: str, sha256: str) -> str:
    """``x-ms-dyn-externalidentifier``: the original file name and a short content hash, header-safe."""
    safe = quote(file_name, safe=" !#$&'()*+,-.;=@[]^_`{}~")
    return f"{safe}#{sha256[:12]}"
