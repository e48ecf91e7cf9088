"""D365-shaped OData errors (ref §1.7): the useful text lives in ``error.innererror.message``."""

from __future__ import annotations

from emulator.odata.messages import ODataResponse, json_response

GENERIC_MESSAGE = "An error has occurred."
INVALID_OPERATION = "System.InvalidOperationException"


class ODataError(Exception):
    """Raised anywhere below the handler; rendered once, as the envelope F&O sends."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str = INVALID_OPERATION,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.headers = headers or []

    def to_response(self) -> ODataResponse:
        return error_response(self.status, self.message, error_type=self.error_type, headers=self.headers)


def error_response(
    status: int,
    message: str,
    *,
    error_type: str = INVALID_OPERATION,
    headers: list[tuple[str, str]] | None = None,
) -> ODataResponse:
    envelope = {
        "error": {
            "code": "",
            "message": GENERIC_MESSAGE,
            "innererror": {"message": message, "type": error_type, "stacktrace": ""},
        }
    }
    return json_response(status, envelope, headers=headers)


def bad_request(message: str) -> ODataError:
    return ODataError(400, message)


def not_found(message: str) -> ODataError:
    return ODataError(404, message)


def no_resource(url: str) -> ODataError:
    """What ASP.NET Web API (which serves F&O's /data) says for a path that maps to nothing."""
    return ODataError(404, f"No HTTP resource was found that matches the request URI '{url}'.")
