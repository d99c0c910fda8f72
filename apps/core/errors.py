"""Error codes shared by the engine, the chat and the API. Each says whether retrying can help."""

from __future__ import annotations

from enum import StrEnum

from pydantic import ValidationError


class ErrorCode(StrEnum):
    INVALID_PARAMETER = "invalid_parameter"
    INVALID_FILE = "invalid_file"
    CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_LOAD_FAILED = "model_load_failed"
    MODEL_UNLOADED = "model_unloaded"  # the worker unloaded it meanwhile: try again
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    INTERNAL = "internal_error"
    RATE_LIMITED = "rate_limit_exceeded"
    QUOTA_EXCEEDED = "quota_exceeded"

    @property
    def retryable(self) -> bool:
        return self in {
            ErrorCode.TIMEOUT,
            ErrorCode.WORKER_LOST,
            ErrorCode.INTERNAL,
            ErrorCode.MODEL_LOAD_FAILED,
            ErrorCode.MODEL_UNLOADED,
        }


class ServiceError(Exception):
    """A rejected request: carries a code, a message a person can act on, and the field at fault."""

    def __init__(self, code: ErrorCode, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = param


def invalid_input(exc: ValidationError) -> ServiceError:
    """The first problem pydantic found, as a ServiceError that names the parameter at fault."""
    error = exc.errors()[0]
    param = ".".join(str(p) for p in error["loc"]) or None
    if error["type"] == "extra_forbidden":
        message = f"Unknown parameter: {param}"
    elif error["type"] == "missing":
        message = f"Missing required parameter: {param}"
    elif error["type"] == "too_short" and error["loc"] and isinstance(error["loc"][-1], str):
        message = f"{param} must not be empty"
    else:
        reason = error["msg"].removeprefix("Value error, ")  # pydantic's prefix says nothing
        message = f"Invalid value for {param}: {reason}"
    return ServiceError(ErrorCode.INVALID_PARAMETER, message, param=param)
