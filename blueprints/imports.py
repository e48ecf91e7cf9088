"""File imports: a blob trigger on the inbound container and the job-monitor timer; no logic here.

The blob trigger takes an SDK-type binding (``azurefunctions-extensions-bindings-blob``): the parameter is
annotated ``azurefunctions.extensions.bindings.blob.BlobClient``, so the Python worker marks the binding
``SupportsDeferredBinding`` when it indexes the app, the host sends a reference (connection, container,
blob name) instead of the content, and the function receives an ``azure.storage.blob.BlobClient`` for
the blob. With a plain ``func.InputStream`` the worker would read the whole blob into memory before the
call, which a 1 GB drop must never be. Only the client's name is used: ``import_blob`` leases and streams
the blob from storage itself (pinned to the version it finds), through the app's own storage client.
Needs Functions runtime 4.34.1+ (extension bundle ``[4.*, 5.0.0)``, Storage Blobs extension 5.x), the v2
programming model and a synchronous function; no app setting is needed. The worker builds the client from
the ``AzureWebJobsStorage`` connection: a connection string, ``__accountName``/``__blobServiceUri``
(system-assigned identity) or those with ``__credential``/``__clientId`` (user-assigned identity).

The trigger's source is ``IMPORT_BLOB_SOURCE``, read when the app loads: ``LogsAndContainerScan`` (the
polling source, the default; the local runner serves both) or ``EventGrid`` (lower latency, scale, and the
only source on Flex Consumption; needs an Event Grid subscription on the storage account,
docs/deployment.md step 6). Either way the pipeline is idempotent, and the monitor's sweep picks up any file
a trigger missed.

Settings the host reads: ``AzureWebJobsStorage`` (the connection), ``IMPORT_INBOUND_CONTAINER`` (the watched
container), ``IMPORT_BLOB_SOURCE`` and ``IMPORT_MONITOR_SCHEDULE`` (NCRONTAB, e.g. ``0 */2 * * * *``).
"""

from __future__ import annotations

import json
import logging

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk  # type: ignore[import-untyped]  # no py.typed

from shared.context import get_context
from shared.logs import log_context
from shared.pipelines.imports import import_blob, monitor_imports
from shared.trigger_source import blob_trigger_source

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # azure-functions leaves __init__ untyped
log = logging.getLogger(__name__)


@bp.function_name("import_inbound_file")
@bp.blob_trigger(
    arg_name="blob",
    path="%IMPORT_INBOUND_CONTAINER%/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(blob_trigger_source("IMPORT_BLOB_SOURCE")),
)
def import_inbound_file(blob: blob_sdk.BlobClient) -> None:
    """Import the dropped file (the binding is a client for it; its bytes are not read here)."""
    container, name = str(blob.container_name), str(blob.blob_name)
    report = import_blob(get_context(), name)
    with log_context(
        file=f"{container}/{name}",
        route=report.route,
        job_id=report.job_id,
        execution_id=report.execution_id,
        message_id=report.message_id,
    ):  # the pipeline's scope has closed: the summary line carries the same ids as its lines
        log.info("import of %s/%s: %s", container, name, json.dumps(report.to_dict()))


@bp.function_name("import_monitor")
@bp.timer_trigger(arg_name="timer", schedule="%IMPORT_MONITOR_SCHEDULE%", run_on_startup=False)
def import_monitor(timer: func.TimerRequest) -> None:
    """Poll in-flight imports, archive or fail the finished ones, flag stuck ones, sweep inbound."""
    report = monitor_imports(get_context())
    log.info("import monitor: %s", json.dumps(report.to_dict(), default=str))
