"""Error codes shared by the engine, the chat and the API. Each says whether retrying can help."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

QUOTED_CHARS = 80  # a longer value is cut, with an ellipsis, where a message names it


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


def quoted(value: Any) -> str:
    """``value`` as a message for people names it: a string in curly quotes as it was typed, any
    other value as its JSON (what the request or file held), cut at QUOTED_CHARS. Never a Python
    repr, whose quotes, escapes and ``None`` mean nothing to someone who sent JSON."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > QUOTED_CHARS:
        text = text[: QUOTED_CHARS - 1] + "…"
    return f"“{text}”"


# Exceptions whose text is a programmer's (a key, an attribute, a type), which says nothing to
# whoever reads a job page or an error body.
_PROGRAMMERS = (KeyError, AttributeError, TypeError, IndexError, NameError, AssertionError)


def failure_for_people(exc: BaseException) -> str:
    """What an unexpected exception may tell a page or an error body: its own message where it
    has one in words (an OSError's, an engine's), else that it was an internal error; never its
    class or a repr. The caller logs the traceback."""
    text = str(exc).strip()
    if not text or isinstance(exc, _PROGRAMMERS):
        return "an internal error (the worker's log has the details)"
    return text


# Pydantic's own messages that quote the values allowed (literals, enums, patterns) in Python's
# single quotes; they hold no apostrophes of their own.
_QUOTING_ERRORS = {"literal_error", "enum", "string_pattern_mismatch", "url_scheme"}


# Where a value may take one of several shapes, pydantic's location names the shape it tried
# (``literal['none','auto']``, ``str``, ``list[Message]``, ``NamedToolChoice``) between the field
# names; a parameter's name leaves them out.
_UNION_TAG = re.compile(r"^(?:[a-z-]+\[.*\]|str|int|float|bool|dict|list|none|[A-Z][A-Za-z0-9]+)$")


def invalid_input(exc: ValidationError) -> ServiceError:
    """The first problem pydantic found, as a ServiceError that names the parameter at fault."""
    error = exc.errors()[0]
    param = ".".join(str(p) for p in error["loc"] if not _UNION_TAG.match(str(p))) or None
    if error["type"] == "extra_forbidden":
        message = f"Unknown parameter: {param}"
    elif error["type"] == "missing":
        message = f"Missing required parameter: {param}"
    elif error["type"] == "too_short" and error["loc"] and isinstance(error["loc"][-1], str):
        message = f"{param} must not be empty"
    else:
        reason = error["msg"].removeprefix("Value error, ")  # pydantic's prefix says nothing
        if error["type"] in ("model_type", "dict_type", "model_attributes_type"):
            reason = "Input should be a JSON object"  # pydantic's names its class
        elif error["type"] in _QUOTING_ERRORS:
            reason = re.sub(r"'([^']*)'", r"“\1”", reason)
        message = f"Invalid value for {param}: {reason}"
    return ServiceError(ErrorCode.INVALID_PARAMETER, message, param=param)
