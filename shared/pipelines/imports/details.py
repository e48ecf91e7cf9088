"""D365's own error detail for a failed import, fetched automatically (peers §2.1, §5: users of every tool
struggled with a bare "failed"): ``GetExecutionErrors``, per entity the target error-keys file
(``GenerateImportTargetErrorKeysFile`` then bounded polling of ``GetImportTargetErrorKeysFileUrl``) and the
staging error file, and the execution summary page URL.

Files are stored next to the input in the errors location (``.../{job}/d365/``); the status record lists
them and carries the first error rows. Each step may fail on its own (recorded under ``detail_errors``)
without stopping the others: partial detail beats none. URLs with SAS signatures are never stored.

The monitor's time budget is checked before each entity: out of time, :class:`DetailIncomplete` carries
what was collected so far; the monitor keeps it in the job record and passes it back as ``progress`` on
its next run, which continues with the remaining entities (every file name is deterministic, so a step
repeated after a crash overwrites its own file).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from shared.d365.dmf import DmfClient, Poller
from shared.d365.errors import D365Error
from shared.pipelines.imports import layout
from shared.pipelines.imports.outcome import Location, Outcomes
from shared.pipelines.imports.settings import ImportSettings
from shared.redact import redact_text, redact_url

__all__ = ["DetailIncomplete", "collect_error_detail"]

log = logging.getLogger(__name__)
MAX_ERRORS_IN_RECORD = 50


def _extension(url: str, default: str) -> str:
    last = urlsplit(url).path.rsplit("/", 1)[-1]
    return (
        "." + last.rsplit(".", 1)[-1].lower()
        if "." in last and len(last.rsplit(".", 1)[-1]) <= 5
        else default
    )


def _download(dmf: DmfClient, outcomes: Outcomes, url: str, target: Location) -> int:
    with tempfile.TemporaryFile(prefix="import-error-") as spool:
        size = dmf.download(url, spool)
        spool.seek(0)
        outcomes.write_file(target, spool, "application/octet-stream")
    return size


class DetailIncomplete(Exception):
    """The time budget ran out while collecting; ``progress`` is passed back on the next run."""

    def __init__(self, progress: dict[str, Any]) -> None:
        super().__init__("error detail collection paused: out of time")
        self.progress = progress


def collect_error_detail(
    dmf: DmfClient,
    outcomes: Outcomes,
    settings: ImportSettings,
    *,
    execution_id: str,
    entities: list[str],
    final: Location,
    sleep: Callable[[float], None] = time.sleep,
    progress: dict[str, Any] | None = None,
    out_of_time: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Fetch everything D365 can tell about the failed execution; returns the record's ``d365`` additions.

    ``progress``: what an earlier, interrupted call collected (:class:`DetailIncomplete`); ``out_of_time``:
    asked before each entity."""
    detail: dict[str, Any] = dict(progress or {"execution_id": execution_id})
    problems: list[str] = list(detail.pop("detail_errors", []))
    files: list[str] = list(detail.get("error_files", []))
    done: list[str] = list(detail.pop("entities_done", []))

    def attempt(what: str, step: Callable[[], None]) -> None:
        try:
            step()
        except D365Error as exc:
            problems.append(f"{what}: {redact_text(str(exc))}")
        except Exception as exc:  # a detail that cannot be fetched must not block the final move
            problems.append(f"{what}: {type(exc).__name__}: {redact_text(str(exc))}")

    def execution_errors() -> None:
        rows = dmf.execution_errors(execution_id)
        detail["error_count"] = len(rows)
        detail["errors"] = [
            {"record_id": r.record_id, "field": r.field, "message": r.message}
            for r in rows[:MAX_ERRORS_IN_RECORD]
        ]
        if rows:
            name = layout.error_file_name(final.name, "execution-errors.json")
            body = json.dumps([vars(r) for r in rows], indent=2, ensure_ascii=False).encode("utf-8")
            outcomes.write_file(Location(final.container, name), body, "application/json")
            files.append(f"{final.container}/{name}")

    def error_keys(entity: str) -> None:
        poller = Poller(interval=settings.error_file_poll_seconds, max_attempts=settings.error_file_polls,
                        sleep=sleep)  # fmt: skip
        url = dmf.wait_for_target_error_keys_file_url(execution_id, entity, poller)
        if url:
            name = layout.error_file_name(final.name, f"{entity}.target-error-keys{_extension(url, '.csv')}")
            _download(dmf, outcomes, url, Location(final.container, name))
            files.append(f"{final.container}/{name}")

    def staging_file(entity: str) -> None:
        url = dmf.staging_error_file_url(execution_id, entity)
        if url:
            name = layout.error_file_name(final.name, f"{entity}.staging-errors{_extension(url, '.csv')}")
            _download(dmf, outcomes, url, Location(final.container, name))
            files.append(f"{final.container}/{name}")

    def summary_page() -> None:
        url = dmf.execution_summary_page_url(execution_id)
        if url:
            detail["summary_page_url"] = redact_url(url)

    if not detail.pop("errors_fetched", False):
        attempt("GetExecutionErrors", execution_errors)
    for entity in entities:
        if entity in done:
            continue
        if out_of_time is not None and out_of_time():
            paused = {**detail, "errors_fetched": True, "entities_done": done, "error_files": files}
            raise DetailIncomplete({**paused, "detail_errors": problems} if problems else paused)
        attempt(f"target error keys of {entity!r}", partial(error_keys, entity))
        attempt(f"staging error file of {entity!r}", partial(staging_file, entity))
        done.append(entity)
    attempt("GetExecutionSummaryPageUrl", summary_page)
    detail["error_files"] = files
    if problems:
        detail["detail_errors"] = problems
        log.warning(
            "import %s: some D365 error detail could not be fetched: %s", execution_id, "; ".join(problems)
        )
    return detail
