"""The Azure Functions app (v2 programming model): composition only, one blueprint per trigger family."""

import logging

import azure.functions as func

from blueprints.business_events import bp as business_events_bp
from blueprints.exports import bp as exports_bp
from blueprints.imports import bp as imports_bp
from blueprints.operations import bp as operations_bp
from blueprints.operations_page import bp as operations_page_bp
from blueprints.populate import bp as populate_bp

# The host filters by its own categories (every Python record arrives as Function.<name>.User), so the
# host.json entry for this logger has no effect on the Python worker: the Azure SDK's per-request INFO lines
# (one per blob call) are quietened here, where the records are made.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(operations_bp)
app.register_functions(exports_bp)
app.register_functions(business_events_bp)
app.register_functions(imports_bp)
app.register_functions(operations_page_bp)
app.register_functions(populate_bp)
