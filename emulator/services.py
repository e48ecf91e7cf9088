"""PLACEHOLDER (replaced by the custom-services emulator work): /api/services."""
from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


class ServiceRegistry:
    def reset(self) -> None:
        """Forget state changed at run time."""


def routes(state: Any) -> list[BaseRoute]:
    return []
