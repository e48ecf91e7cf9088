"""File imports: a blob trigger on the inbound container and the job-monitor timer; no logic here.

The blob trigger only takes the blob's *name*: ``import_blob`` leases and streams the blob from storage
itself (pinned to the version that triggered), so a 1 GB file never has to fit in memory. Note that in
Azure the Python worker materialises an ``InputStream`` binding's content before the call; for very large
files prefer the SDK-type binding (``azurefunctions-extensions-bindings-blob``) or an Event Grid trigger
that passes only the name. The trigger uses the default polling source so the local runner serves it;
production should switch to ``source=func.BlobSource.EVENT_GRID`` (lower latency, scale, Flex Consumption;
needs an Event Grid subscription on the storage account, see local-stack.md). Either way the pipeline is
idempotent, and the monitor's sweep picks up any file a trigger missed.

Settings the host reads: ``AzureWebJobsStorage`` (the connection), ``IMPORT_INBOUND_CONTAINER`` (the watched
container) and ``IMPORT_MONITOR_SCHEDULE`` (NCRONTAB, e.g. ``0 */2 * * * *``).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func

from shared.context import get_context
from shared.pipelines.imports import import_blob, monitor_imports

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


@bp.function_name("import_inbound_file")
@bp.blob_trigger(arg_name="blob", path="%IMPORT_INBOUND_CONTAINER%/{name}", connection="AzureWebJobsStorage")
def import_inbound_file(blob: func.InputStream) -> None:
    """Import the dropped file (the binding's name is ``container/blob``; its bytes are not read here)."""
    container, _, name = (blob.name or "").partition("/")
    report = import_blob(get_context(), name)
    log.info("import of %s/%s: %s", container, name, json.dumps(report.to_dict()))


@bp.function_name("import_monitor")
@bp.timer_trigger(arg_name="timer", schedule="%IMPORT_MONITOR_SCHEDULE%", run_on_startup=False)
def import_monitor(timer: func.TimerRequest) -> None:
    """Poll in-flight imports, archive or fail the finished ones, flag stuck ones, sweep inbound."""
    report = monitor_imports(get_context())
    log.info("import monitor: %s", json.dumps(report.to_dict(), default=str))
