"""PLACEHOLDER (replaced by the OData emulator work): SQLite-backed entity store."""
from __future__ import annotations

from pathlib import Path


class ODataStore:
    def __init__(self, db_path: Path, *, seed: bool = True, default_company: str = "usmf") -> None:
        self.db_path = db_path

    def reset(self) -> None:
        """Restore the seeded demo data."""

    def seed(self, entity_set: str, count: int) -> int:
        """Add `count` generated rows to an entity set; returns the new row count."""
        return 0
