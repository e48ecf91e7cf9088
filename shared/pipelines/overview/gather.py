"""``gather_overview``: one bounded pass over storage (and a few D365 status calls) for operators.

Each part (imports, business events, exports) is gathered on its own: a part whose settings are invalid or
whose storage cannot be read becomes one line in ``problems``, is named in ``unknown`` (shown as unknown,
never as zero) and the rest is still shown. Storage gets one bounded attempt per call within
``OVERVIEW_STORAGE_SECONDS``, and once it could not be reached the remaining parts do not call it
(``listing.Lister``): the overview answers in seconds when storage is down, with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from shared.context import AppContext
from shared.events.settings import BusinessEventSettings
from shared.pipelines.exports.settings import ExportSettings
from shared.pipelines.imports.settings import ImportSettings
from shared.pipelines.overview.d365_status import LiveStatus
from shared.pipelines.overview.events import gather_events
from shared.pipelines.overview.exports import gather_exports
from shared.pipelines.overview.imports import gather_imports
from shared.pipelines.overview.listing import Lister
from shared.pipelines.overview.model import EVENTS, EXPORTS, IMPORTS, Overview
from shared.pipelines.overview.settings import OverviewSettings
from shared.redact import redact_text
from shared.settings import ConfigurationError
from shared.status import utc_now

__all__ = ["gather_overview"]

log = logging.getLogger(__name__)


def _problem(part: str, exc: Exception) -> str:
    if isinstance(exc, ConfigurationError):
        return f"{part}: invalid configuration: " + "; ".join(exc.problems)
    first_line = (str(exc) or type(exc).__name__).splitlines()[0]
    return f"{part}: {type(exc).__name__}: {redact_text(first_line)[:300]}"


def gather_overview(
    context: AppContext,
    *,
    now: datetime | None = None,
    ask_d365: bool = True,
    settings: OverviewSettings | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Overview:
    """Pipeline counts, in-flight and stuck imports, recent failures, business events and exports."""
    now = now or datetime.now(UTC)
    bounds = settings or context.settings.section(OverviewSettings)
    since = now - timedelta(hours=bounds.window_hours)
    overview = Overview(generated_at=utc_now(), window_hours=bounds.window_hours)
    lister = Lister(context.blob_service, bounds.list_cap, seconds=bounds.storage_seconds, clock=clock)
    live = None
    if ask_d365 and bounds.d365_status_limit:
        live = LiveStatus(context, limit=bounds.d365_status_limit, seconds=bounds.d365_seconds, clock=clock)
    recent = bounds.recent_limit

    def imports(into: Overview) -> None:
        gather_imports(
            into, lister, context.settings.section(ImportSettings), now=now, since=since,
            recent=recent, inflight_limit=bounds.inflight_limit, live=live,
        )  # fmt: skip

    def events(into: Overview) -> None:
        section = context.settings.section(BusinessEventSettings)
        gather_events(into, lister, section, now=now, since=since, recent=recent)

    def exports(into: Overview) -> None:
        section = context.settings.section(ExportSettings)
        gather_exports(into, lister, section, now=now, since=since, recent=recent)

    parts: dict[str, Callable[[Overview], None]] = {IMPORTS: imports, EVENTS: events, EXPORTS: exports}
    for part, gather in parts.items():
        # Each part fills its own overview, merged only when complete: half a part would show as counts.
        gathered = Overview(generated_at=overview.generated_at, window_hours=overview.window_hours)
        notes = len(lister.notes)
        try:
            gather(gathered)
        except Exception as exc:  # one part's trouble must not hide the others
            del lister.notes[notes:]
            overview.unknown.append(part)
            overview.problems.append(_problem(part, exc))
            log.warning("operations overview: %s", overview.problems[-1])
            continue
        _merge(overview, gathered)
    overview.failures.sort(key=lambda f: f.at, reverse=True)
    del overview.failures[recent:]
    overview.notes.extend(lister.notes)
    if live is not None and live.skipped:
        overview.notes.append(
            f"D365 was not asked about {live.skipped} in-flight job(s) (OVERVIEW_D365_STATUS_LIMIT / "
            "OVERVIEW_D365_SECONDS): their last recorded status is shown"
        )
    return overview


def _merge(overview: Overview, part: Overview) -> None:
    overview.routes += part.routes
    overview.in_flight += part.in_flight
    overview.in_flight_total += part.in_flight_total
    overview.failures += part.failures
    overview.events += part.events
    overview.event_counts.update(part.event_counts)
    overview.exports += part.exports
    overview.notes += part.notes
