"""PLACEHOLDER (replaced by the Key Vault emulator work): secrets data plane."""
from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


class KeyVault:
    def reset(self) -> None:
        """Forget every secret."""


def routes(state: Any) -> list[BaseRoute]:
    return []
