"""The Azure Functions app (v2 programming model): composition only, one blueprint per trigger family."""

import azure.functions as func

from blueprints.operations import bp as operations_bp

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(operations_bp)
