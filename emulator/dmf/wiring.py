"""Attach the DMF to an emulator state: its OData sets, the blob container, the journal and the actions."""

from __future__ import annotations

import logging
from typing import Any

from emulator.dmf.actions import register_actions
from emulator.dmf.blobs import DEFAULT_CONNECTION_STRING, DmfBlobs
from emulator.dmf.definitions import register_sets
from emulator.dmf.model import DmfModel, DmfSettings

log = logging.getLogger(__name__)


def install(
    state: Any, *, blob_connection_string: str | None = None, step_delay_seconds: float | None = None
) -> DmfModel:
    """Build ``state.dmf``; called once by ``emulator.app.build_state``."""
    register_sets(state.odata)
    blobs = DmfBlobs(blob_connection_string or DEFAULT_CONNECTION_STRING)
    settings = DmfSettings()
    if step_delay_seconds is not None:
        settings.step_delay_seconds = step_delay_seconds
    model = DmfModel(state, blobs, settings)
    register_actions(state)
    state.extra_info["dmf_blob_endpoint"] = f"{blobs.endpoint}/dmf"  # in the ready line; no key in it
    log.debug("DMF package API on blob endpoint %s", blobs.endpoint)
    return model
