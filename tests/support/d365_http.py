"""A small authenticated HTTP client for tests that talk to the emulator's D365 endpoints directly.

It gets a token the way the app does (``tests.support.d365.bearer_token``: client credentials at the
emulator's Entra stand-in, over HTTPS with the emulator's CA) and sends plain ``requests`` calls, so the tests
see exactly what goes on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from localstack.processes import EmulatorInfo
from tests.support.d365 import bearer_token

ODATA_HEADERS = {"Accept": "application/json", "OData-Version": "4.0", "OData-MaxVersion": "4.0"}


@dataclass
class D365Http:
    """``requests`` with the bearer token set; paths are relative to ``{base_url}/data/``."""

    base_url: str
    session: requests.Session

    @property
    def root(self) -> str:
        return f"{self.base_url}/data"

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.root}/{path.lstrip('/')}"

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 120)
        return self.session.request(method, self.url(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def values(self, path: str, **kwargs: Any) -> list[dict[str, Any]]:
        """GET a collection and follow every ``@odata.nextLink``; all rows of all pages."""
        rows: list[dict[str, Any]] = []
        response = self.get(path, **kwargs)
        kwargs.pop("params", None)
        while True:
            response.raise_for_status()
            page = response.json()
            rows.extend(page["value"])
            link = page.get("@odata.nextLink")
            if not link:
                return rows
            response = self.get(link, **kwargs)


def d365_http(
    info: EmulatorInfo, *, client_id: str | None = None, client_secret: str | None = None
) -> D365Http:
    session = requests.Session()
    session.headers.update(ODATA_HEADERS)
    token = bearer_token(info, client_id=client_id, client_secret=client_secret)
    session.headers["Authorization"] = f"Bearer {token}"
    return D365Http(info.base_url, session)
