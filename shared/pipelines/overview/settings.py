"""Bounds of one operations overview (the ``ops status`` report and the operations page).

App settings (all optional):

- ``OVERVIEW_WINDOW_HOURS`` (24, up to 720): what "recent" means. Archived and failed counts, failures,
  business events and exports cover files and records written in this window.
- ``OVERVIEW_RECENT_LIMIT`` (20, 1-200): rows shown per list (failures, business events, exports); each
  row costs one small blob read.
- ``OVERVIEW_LIST_CAP`` (5000, 100-100000): most blob names one listing reads. A container holding more
  (a backlog in inbound, a busy day in the archive) is counted up to the cap and the overview says so.
- ``OVERVIEW_INFLIGHT_LIMIT`` (50, 1-500): in-flight import job records read (oldest first).
- ``OVERVIEW_D365_STATUS_LIMIT`` (10, 0-100): in-flight jobs whose status is asked of D365 live (oldest
  first; 0 = never ask, show what the import monitor last recorded).
- ``OVERVIEW_D365_SECONDS`` (5, up to 60): no new D365 status call starts after this many seconds.
- ``OVERVIEW_STORAGE_SECONDS`` (20, up to 120): no new storage call starts after this many seconds; each
  call is one attempt (3 s to connect, at most 10 s to answer), and none follows a connection failure.
  The parts not gathered by then are shown as unknown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from shared.settings_reader import SettingsReader

__all__ = ["OverviewSettings"]


@dataclass(frozen=True)
class OverviewSettings:
    window_hours: float = 24.0
    recent_limit: int = 20
    list_cap: int = 5000
    inflight_limit: int = 50
    d365_status_limit: int = 10
    d365_seconds: float = 5.0
    storage_seconds: float = 20.0

    @classmethod
    def from_reader(cls, reader: SettingsReader) -> Self:
        return cls(
            window_hours=reader.number("OVERVIEW_WINDOW_HOURS", 24.0, above=True, maximum=720),
            recent_limit=reader.integer("OVERVIEW_RECENT_LIMIT", 20, minimum=1, maximum=200),
            list_cap=reader.integer("OVERVIEW_LIST_CAP", 5000, minimum=100, maximum=100_000),
            inflight_limit=reader.integer("OVERVIEW_INFLIGHT_LIMIT", 50, minimum=1, maximum=500),
            d365_status_limit=reader.integer("OVERVIEW_D365_STATUS_LIMIT", 10, minimum=0, maximum=100),
            d365_seconds=reader.number("OVERVIEW_D365_SECONDS", 5.0, above=True, maximum=60),
            storage_seconds=reader.number("OVERVIEW_STORAGE_SECONDS", 20.0, above=True, maximum=120),
        )
