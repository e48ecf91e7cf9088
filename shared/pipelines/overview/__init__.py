"""The operations overview: what the ``ops status`` command and the operations page show.

``gather_overview(context)`` makes one bounded pass over storage (``settings.OverviewSettings``);
``render_page`` turns it into the page's HTML; ``read_status_record`` serves one record for its links.
"""

from shared.pipelines.overview.gather import gather_overview
from shared.pipelines.overview.html import PageLinks, render_page
from shared.pipelines.overview.model import EventRow, ExportRow, Failure, InflightJob, Overview, RouteCounts
from shared.pipelines.overview.records import (
    RecordAnswer,
    RecordPathError,
    RecordRules,
    check_record_path,
    read_status_record,
)
from shared.pipelines.overview.settings import OverviewSettings

__all__ = [
    "EventRow",
    "ExportRow",
    "Failure",
    "InflightJob",
    "Overview",
    "OverviewSettings",
    "PageLinks",
    "RecordAnswer",
    "RecordPathError",
    "RecordRules",
    "RouteCounts",
    "check_record_path",
    "gather_overview",
    "read_status_record",
    "render_page",
]
