"""Exports from D365 into blob storage, each stored exactly once: the recurring-integrations dequeue
(``dequeue``) and DMF package exports (``dmf_export``), with optional unpacking and manifest records
(``unpack``). Settings: ``settings.ExportSettings``; storage layout: ``layout``.
"""

from shared.pipelines.exports.dequeue import dequeue_all_exports, dequeue_exports
from shared.pipelines.exports.dmf_export import run_all_dmf_exports, run_dmf_export
from shared.pipelines.exports.report import ItemReport, RunBudget, RunReport
from shared.pipelines.exports.settings import DmfExportJob, ExportActivity, ExportSettings

__all__ = [
    "DmfExportJob",
    "ExportActivity",
    "ExportSettings",
    "ItemReport",
    "RunBudget",
    "RunReport",
    "dequeue_all_exports",
    "dequeue_exports",
    "run_all_dmf_exports",
    "run_dmf_export",
]
