"""The demo: every flow of the app happening on the local stack, each with a pass/fail line, then a summary
of where every result landed (docs/demo.md).

- ``python -m demo`` (``make demo``): once, on a fresh stack with free ports; exit status 1 if a flow failed.
- ``run_demo(DemoTarget(...))``: against a running stack; ``python -m localstack`` (``make run``) calls it
  after start-up and keeps serving.

Development-only (``.funcignore``): it drives the app from outside, through the pieces a user has — the
inbound container, the emulator's admin API (what a D365 administrator sets up), the Functions host's
endpoint that runs a timer now — and reads the results where operators read them.
"""

from demo.report import DemoReport, FlowResult
from demo.run import FLOWS, run_demo
from demo.target import DemoTarget

__all__ = ["FLOWS", "DemoReport", "DemoTarget", "FlowResult", "run_demo"]
