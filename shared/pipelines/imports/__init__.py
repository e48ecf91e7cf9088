"""File imports: a blob dropped in the inbound container reaches D365 exactly once and ends in the archive
or errors container beside a status record saying what D365 did with it.

- ``import_blob(context, blob_name) -> ImportReport`` (intake.py): the blob trigger's pipeline.
- ``monitor_imports(context, now=...) -> MonitorReport`` (monitor.py): the timer's pipeline.
- ``ImportSettings`` (settings.py): app settings and the ``IMPORT_ROUTES`` schema.
Storage layout and ids: layout.py. Exactly-once rules: ledger.py. D365 calls and their failure verdicts:
send.py. Packaging while hashing: preparing.py / packaging.py.
"""

from shared.pipelines.imports.intake import ImportReport, import_blob
from shared.pipelines.imports.monitor import MonitorReport, monitor_imports
from shared.pipelines.imports.settings import ImportSettings

__all__ = ["ImportReport", "ImportSettings", "MonitorReport", "import_blob", "monitor_imports"]
