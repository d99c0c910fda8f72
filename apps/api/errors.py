"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any

from django.http import JsonResponse

from apps.core.errors import ErrorCode, ServiceError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type or _TYPES.get(status, "api_error")
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.details = details  # e.g. each bad row of an uploaded file: {"line", "message"}

    @classmethod
    def from_service(cls, error: ServiceError) -> ApiError:
        status = 404 if error.code == ErrorCode.MODEL_NOT_FOUND else 400
        return cls(status, error.message, code=error.code, param=error.param)

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}

    def response(self) -> JsonResponse:
        response = JsonResponse(self.body(), status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


# How a failed generation answers, by its error code.
GENERATION_FAILURE_STATUS = {
    ErrorCode.CONTEXT_LENGTH_EXCEEDED: 400,
    ErrorCode.INVALID_PARAMETER: 400,
    ErrorCode.MODEL_LOAD_FAILED: 503,
    ErrorCode.MODEL_UNLOADED: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.WORKER_LOST: 503,
    ErrorCode.INTERNAL: 500,
}
