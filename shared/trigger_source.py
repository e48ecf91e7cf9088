"""The blob triggers' ``source``, chosen by an app setting because it is fixed when the host indexes the app.

``LogsAndContainerScan`` (the polling source; the default, and what the local runner serves) or
``EventGrid`` (pushed ``BlobCreated`` events: lower latency, scale, and the only source on Flex
Consumption). Any other value falls back to the default rather than failing the whole app at load time;
the readiness report and docs/deployment.md say which to pick.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

__all__ = ["blob_trigger_source"]


def blob_trigger_source(setting: str, env: Mapping[str, str] | None = None) -> str:
    value = (os.environ if env is None else env).get(setting, "").strip()
    return "EventGrid" if value.lower() == "eventgrid" else "LogsAndContainerScan"
