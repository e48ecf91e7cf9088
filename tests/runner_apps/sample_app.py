"""A v2-model app exercising every trigger and binding feature the local runner serves (and two it skips).

``build_app(recorder)`` makes a fresh ``FunctionApp`` whose functions report to ``recorder``; in-process
tests build one per runner. The module-level ``app`` (for ``python -m runner``) reports to the JSONL file
named by ``RUNNER_TEST_RECORD_DIR``. Containers and schedules come from ``%SETTING%`` expressions so
each test chooses its own; tests switch functions off with ``AzureWebJobs.<name>.Disabled``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_sdk  # type: ignore[import-untyped]

from tests.runner_apps.recorder import Recorder


def _json(data: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(data), status_code=status, mimetype="application/json")


def _http(app: func.FunctionApp, rec: Recorder) -> None:
    @app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"], auth_level=func.AuthLevel.ANONYMOUS)
    def items(req: func.HttpRequest) -> func.HttpResponse:
        return _json(
            {
                "function": "items",
                "method": req.method,
                "url": req.url,
                "route": dict(req.route_params),
                "params": dict(req.params),
                "body": req.get_body().decode(),
                "header": req.headers.get("x-test-header"),
                "content_type": req.headers.get("content-type"),
            }
        )

    @app.route(route="items/{slug:alpha}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def items_by_name(req: func.HttpRequest) -> str:
        return f"alpha:{req.route_params['slug']}"

    @app.route(route="files/{*path}", auth_level=func.AuthLevel.ANONYMOUS)
    def files(req: func.HttpRequest) -> str:
        return f"path={req.route_params.get('path', '')}"

    @app.route(route="secure")
    def secure(req: func.HttpRequest) -> str:
        return "function-level ok"

    @app.route(route="operator", auth_level=func.AuthLevel.ADMIN)
    def operator_only(req: func.HttpRequest) -> str:
        return "admin-level ok"

    @app.route(route="async/{value}", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
    async def async_echo(req: func.HttpRequest) -> func.HttpResponse:
        await asyncio.sleep(0.01)
        return func.HttpResponse(
            req.get_body(),
            status_code=201,
            headers={"X-Echo": req.route_params["value"]},
            mimetype="application/octet-stream",
        )

    @app.route(route="slow", auth_level=func.AuthLevel.ANONYMOUS)
    def slow(req: func.HttpRequest) -> str:
        seconds = float(req.params.get("s", "1"))
        rec.record("slow_http_started", seconds=seconds)
        time.sleep(seconds)
        rec.record("slow_http_finished", seconds=seconds)
        return f"slept {seconds}"

    @app.route(route="none", auth_level=func.AuthLevel.ANONYMOUS)
    def returns_none(req: func.HttpRequest) -> None:
        return None

    @app.route(route="dict", auth_level=func.AuthLevel.ANONYMOUS)
    def returns_dict(req: func.HttpRequest) -> dict[str, str]:
        return {"not": "allowed"}

    @app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
    def boom(req: func.HttpRequest) -> str:
        raise RuntimeError("boom on purpose")

    @app.route(route="context", auth_level=func.AuthLevel.ANONYMOUS)
    def with_context(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        local_id = getattr(context.thread_local_storage, "invocation_id", None)
        return _json({"name": context.function_name, "id": context.invocation_id, "thread_local": local_id})

    @app.route(route="out", auth_level=func.AuthLevel.ANONYMOUS, binding_arg_name="res")
    def out_param(req: func.HttpRequest, res: func.Out[func.HttpResponse]) -> None:
        res.set(func.HttpResponse("via Out", status_code=202))


def _timers(app: func.FunctionApp, rec: Recorder) -> None:
    @app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer")
    def tick(timer: func.TimerRequest) -> None:
        rec.record(
            "tick", past_due=timer.past_due, status=getattr(timer, "schedule_status", None)
        )  # concrete class only

    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
    def startup_tick(timer: func.TimerRequest) -> None:
        rec.record("startup_tick", past_due=timer.past_due)

    @app.timer_trigger(schedule="%SLOW_TICK_SCHEDULE%", arg_name="timer")
    def slow_tick(timer: func.TimerRequest) -> None:
        rec.record("slow_tick_started", pid=os.getpid())
        time.sleep(1.2)
        rec.record("slow_tick_finished", pid=os.getpid())

    @app.retry(strategy="fixed_delay", max_retry_count="2", delay_interval="00:00:00")
    @app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True)
    def flaky_tick(timer: func.TimerRequest, context: func.Context) -> None:
        rec.record("flaky_tick", retry=context.retry_context.retry_count)
        if context.retry_context.retry_count < 2:
            raise RuntimeError("fails twice, then works")


def _blobs(app: func.FunctionApp, rec: Recorder) -> None:
    @app.blob_trigger(arg_name="blob", path="%INBOUND_CONTAINER%/{name}", connection="AzureWebJobsStorage")
    def on_inbound(blob: func.InputStream) -> None:
        content = blob.read()
        rec.record(
            "inbound",
            name=blob.name,
            length=blob.length,
            content=content.decode(),
            metadata=getattr(blob, "metadata", None),  # not on the abstract InputStream
            uri=blob.uri,
            pid=os.getpid(),
        )

    @app.blob_trigger(
        arg_name="data",
        path="%CSV_CONTAINER%/{name}.csv",
        connection="AzureWebJobsStorage",
        source=func.BlobSource.EVENT_GRID,
    )
    def on_csv(data: bytes) -> None:
        rec.record("csv", size=len(data), text=data.decode())

    @app.blob_trigger(arg_name="blob", path="%POISON_CONTAINER%/{name}", connection="AzureWebJobsStorage")
    def on_poison(blob: func.InputStream, context: func.Context) -> None:
        rec.record("poison_attempt", name=blob.name, retry=context.retry_context.retry_count)
        raise ValueError(f"cannot handle {blob.name}")

    @app.blob_trigger(arg_name="blob", path="%SLOW_CONTAINER%/{name}", connection="AzureWebJobsStorage")
    def on_slow(blob: func.InputStream) -> None:
        seconds = float(os.environ.get("RUNNER_TEST_SLOW_SECONDS", "2"))
        rec.record("slow_blob_started", name=blob.name, pid=os.getpid())
        time.sleep(seconds)
        rec.record("slow_blob_finished", name=blob.name, pid=os.getpid())

    @app.blob_trigger(arg_name="client", path="%SDK_CONTAINER%/{name}", connection="AzureWebJobsStorage")
    def on_sdk_client(client: blob_sdk.BlobClient) -> None:  # SDK-type binding: a client, not the bytes
        rec.record(
            "sdk_client",
            type=f"{type(client).__module__}.{type(client).__qualname__}",
            container=client.container_name,
            blob=client.blob_name,
            size=client.get_blob_properties().size,
            head=client.download_blob(offset=0, length=4).readall().decode(),
        )


def _unsupported(app: func.FunctionApp) -> None:
    @app.queue_trigger(arg_name="msg", queue_name="orders", connection="AzureWebJobsStorage")
    def on_queue(msg: func.QueueMessage) -> None:  # skipped: queue triggers are not served
        pass

    @app.route(route="with-output", auth_level=func.AuthLevel.ANONYMOUS)
    @app.blob_output(arg_name="out", path="outbound/{rand-guid}", connection="AzureWebJobsStorage")
    def with_blob_output(req: func.HttpRequest, out: func.Out[str]) -> str:  # skipped: blob output
        return "never served"


def build_app(recorder: Recorder | None = None) -> func.FunctionApp:
    rec = recorder or Recorder()
    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    _http(app, rec)
    _timers(app, rec)
    _blobs(app, rec)
    _unsupported(app)
    return app


_record_dir = os.environ.get("RUNNER_TEST_RECORD_DIR")
app = build_app(Recorder(Path(_record_dir) / "events.jsonl" if _record_dir else None))
