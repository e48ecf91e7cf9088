"""The token seam between authentication (shared/identity.py) and the D365 HTTP core (transport.py)."""

from __future__ import annotations

from typing import Protocol


class TokenProvider(Protocol):
    """Hands out bearer tokens for one audience (the D365 environment URL)."""

    def get_token(self) -> str:
        """A valid access token, cached and refreshed before it expires (also during long paging)."""
        ...

    def invalidate(self) -> None:
        """Forget cached tokens so the next ``get_token`` fetches a fresh one (used once after a 401)."""
        ...
