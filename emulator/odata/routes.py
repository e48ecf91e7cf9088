"""PLACEHOLDER (replaced by the OData emulator work): routes under /data."""
from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


def routes(state: Any) -> list[BaseRoute]:
    return []
