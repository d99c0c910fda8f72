"""The OpenAPI description of /v1, built from the same pydantic models that validate requests."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .schemas import (
    ChatCompletionRequest,
    ClassificationRequest,
    CompletionRequest,
    EmbeddingRequest,
    FineTuningJobRequest,
    ResponseRequest,
)

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}
_ERRORS = {
    "400": "Invalid or unknown parameter, empty input, prompt over the context window "
    "(code context_length_exceeded)",
    "401": "Missing, malformed, unknown, expired or revoked key",
    "403": "The key lacks the scope",
    "404": "Unknown model, or one this account may not use",
    "413": "Request body too large",
    "429": "Rate limit or daily token quota reached (see Retry-After)",
}


def _responses(ok: str) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": ok}}
    for status, description in _ERRORS.items():
        responses[status] = {
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return responses


def _post(model: type[BaseModel], summary: str, ok: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                    }
                },
            },
            "responses": _responses(ok),
        }
    }


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _get(summary: str, ok: str, *params: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": _responses(ok)}
    if params:
        operation["parameters"] = [_path_param(p) for p in params]
    return operation


def _finetuning_paths() -> dict[str, Any]:
    upload = {
        "summary": "Upload a JSONL file: a dataset (purpose 'fine-tune') or a Batch API input "
        "(purpose 'batch'); every line is checked first",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file", "purpose"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "purpose": {"type": "string", "enum": ["fine-tune", "batch"]},
                        },
                    }
                }
            },
        },
        "responses": _responses(
            "A file object. A bad file answers 400 with error.details: [{line, message}]"
        ),
    }
    create = _post(FineTuningJobRequest, "Start a fine-tuning job", "A fine_tuning.job")["post"]
    job = ("job_id",)
    return {
        "/files": {"get": _get("Your datasets", "A list of file objects"), "post": upload},
        "/files/{file_id}": {
            "get": _get("One dataset", "A file object", "file_id"),
            "delete": _get("Delete a dataset (409 while a job uses it)", "Deleted", "file_id"),
        },
        "/fine_tuning/jobs": {
            "get": _get("Your fine-tuning jobs, newest first", "A list of fine_tuning.job"),
            "post": create,
        },
        "/fine_tuning/jobs/{job_id}": {"get": _get("One job", "A fine_tuning.job", *job)},
        "/fine_tuning/jobs/{job_id}/events": {
            "get": _get("A job's events, newest first", "A list of fine_tuning.job.event", *job)
        },
        "/fine_tuning/jobs/{job_id}/cancel": {
            "post": _get("Cancel a job (409 if it has ended)", "The fine_tuning.job", *job)
        },
    }


def _responses_paths() -> dict[str, Any]:
    one = ("response_id",)
    return {
        "/responses": _post(
            ResponseRequest,
            "Create a response (the Responses API, text in and out)",
            "A response object; with stream, SSE events (response.created, "
            "response.output_text.delta, ..., response.completed); with background, the "
            "response at once, status queued",
        ),
        "/responses/{response_id}": {
            "get": _get("A stored response", "The response object", *one),
            "delete": _get("Delete a stored response", "Deleted", *one),
        },
        "/responses/{response_id}/cancel": {
            "post": _get("Cancel a background response", "The response object", *one)
        },
        "/responses/{response_id}/input_items": {
            "get": _get(
                "A response's input items (order: desc or asc; limit; after)",
                "A list of input items",
                *one,
            )
        },
    }


def _batch_paths() -> dict[str, Any]:
    create = {
        "summary": "Run a batch file's requests at batch priority (interactive requests overtake "
        "them); every line checked first, a bad one refused by line number",
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["input_file_id", "endpoint", "completion_window"],
                        "additionalProperties": False,
                        "properties": {
                            "input_file_id": {"type": "string"},
                            "endpoint": {
                                "type": "string",
                                "enum": [
                                    "/v1/chat/completions",
                                    "/v1/completions",
                                    "/v1/embeddings",
                                ],
                            },
                            "completion_window": {"type": "string", "enum": ["24h"]},
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    }
                }
            },
        },
        "responses": _responses("A batch object (status validating)"),
    }
    one = ("batch_id",)
    return {
        "/batches": {
            "get": _get("Your batches, newest first", "A list of batches"),
            "post": create,
        },
        "/batches/{batch_id}": {"get": _get("One batch", "A batch object", *one)},
        "/batches/{batch_id}/cancel": {
            "post": _get("Cancel a batch; what finished stays in its output", "The batch", *one)
        },
        "/files/{file_id}/content": {
            "get": _get(
                "A Batch API file's text (an input, or a batch's output or error file)",
                "JSONL",
                "file_id",
            )
        },
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": _ERROR}
    for model in (
        ChatCompletionRequest,
        CompletionRequest,
        EmbeddingRequest,
        ClassificationRequest,
        FineTuningJobRequest,
        ResponseRequest,
    ):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Playground API",
            "version": "1",
            "description": "OpenAI-compatible endpoints. Authenticate with "
            "'Authorization: Bearer <key>' from your account's API keys page.",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearer": []}],
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/models": {
                "get": {
                    "summary": "Models this account may use",
                    "responses": _responses("A list of models"),
                }
            },
            "/models/{model}": {
                "get": {
                    "summary": "One model",
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": _responses("The model"),
                },
                "delete": _get(
                    "Delete one of your fine-tuned models (fine-tuning scope)", "Deleted", "model"
                ),
            },
            "/chat/completions": _post(
                ChatCompletionRequest,
                "Chat completion",
                "A chat.completion, or SSE chat.completion.chunk events "
                "ending with 'data: [DONE]' when stream is true",
            ),
            "/completions": _post(
                CompletionRequest,
                "Text completion",
                "A text_completion, or SSE events when stream is true",
            ),
            "/embeddings": _post(EmbeddingRequest, "Embeddings", "A list of embeddings"),
            "/classifications": _post(
                ClassificationRequest,
                "Label texts with one of your classifiers",
                "A list of {index, label, scores} (scores: the probability of every label)",
            ),
            **_responses_paths(),
            **_batch_paths(),
            **_finetuning_paths(),
        },
    }
