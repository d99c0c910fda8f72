"""What crosses the engine boundary: requests, sampling parameters and the events of a stream.

Nothing here imports Django models or torch, so the web tier, the worker and the engines share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from apps.core.errors import ErrorCode, invalid_input

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
MAX_NEW_TOKENS = 4096


class SamplingParams(BaseModel):
    """Bounds are the contract: anything outside them is rejected, never clamped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)  # 0 means greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=1000)  # 0 means no top-k cut
    max_tokens: int = Field(512, ge=1, le=MAX_NEW_TOKENS)
    repetition_penalty: float = Field(1.0, ge=0.5, le=2.0)
    stop: tuple[str, ...] = Field(default=(), max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not item or len(item) > MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters")
        return value

    @classmethod
    def parse(cls, data: dict[str, Any]) -> SamplingParams:
        """Validate ``data``; raise ServiceError naming the first parameter at fault."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_input(exc) from None


@dataclass(frozen=True)
class ModelSpec:
    """Where a model version's weights are and how it may be used; built from a ModelVersion row."""

    key: str  # unique per version, e.g. "smollm2-135m-instruct@q4_1"
    source_kind: Literal["packaged", "local", "hub", "adapter"]
    source: str
    context_length: int
    base: ModelSpec | None = None  # the version an adapter applies to
    revision: str = ""  # hub sources: a branch, tag or commit
    dtype: str = "auto"  # "auto": the worker's INFERENCE_DTYPE
    device: str = "auto"  # "auto": the worker's INFERENCE_DEVICE
    chat_template: str = ""  # replaces the tokenizer's own when set
    version_id: int | None = None  # the ModelVersion row, for reporting load results
    engine: str = "auto"  # "auto", "llamacpp" or "transformers" (INFERENCE_ENGINE may override)

    @property
    def is_gguf(self) -> bool:
        """Whether the weights are one GGUF file (llama.cpp's format)."""
        return self.source_kind in ("packaged", "local") and self.source.endswith(".gguf")


@dataclass(frozen=True)
class Resume:
    """Where an answer a lost worker began stands: the tokens it generated and the text of them
    already streamed. The engine reads the prompt and these tokens, then goes on from there as if
    it had generated them itself (``max_tokens`` counts them; the stop sequences see their text)."""

    token_ids: tuple[int, ...]
    text: str


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    params: SamplingParams
    messages: list[dict[str, str]] | None = None  # chat: rendered through the chat template
    prompt: str | None = None  # completion: used as it is
    deadline_s: float | None = None  # wall-clock budget from submission
    resume: Resume | None = None  # continue an answer from its stored tokens


@dataclass(frozen=True)
class TokenDelta:
    text: str
    token_ids: tuple[int, ...]  # the new tokens this delta covers (their text may be held back)

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Finished:
    finish_reason: Literal["stop", "length", "cancelled", "timeout"]
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV was reused rather than read again


@dataclass(frozen=True)
class EngineError:
    """A request the engine could not serve; whether trying again can help is ``code.retryable``."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class Idle:
    """Nothing new yet; lets the caller check for a stop while the request waits or prefills."""


Event = TokenDelta | Finished | EngineError | Idle
