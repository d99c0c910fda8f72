"""What crosses the engine boundary: requests, sampling parameters and the events of a stream.

Nothing here imports Django models or torch, so the web tier, the worker and the engines share it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from apps.core.errors import ErrorCode, invalid_input

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 200
MAX_NEW_TOKENS = 4096
MAX_LOGIT_BIAS = 300  # token ids one request may bias
MAX_TOP_LOGPROBS = 20  # alternatives a request may ask for at each position
MAX_GRAMMAR_CHARS = 200_000  # a compiled response_format's grammar


class SamplingParams(BaseModel):
    """Bounds are the contract: anything outside them is rejected, never clamped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)  # 0 means greedy
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, le=1000)  # 0 means no top-k cut
    max_tokens: int = Field(512, ge=1, le=MAX_NEW_TOKENS)
    repetition_penalty: float = Field(1.0, ge=0.5, le=2.0)
    # OpenAI's: subtracted from a token's logit per time it was generated, and once if it was.
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    logit_bias: dict[int, float] = Field(default_factory=dict, max_length=MAX_LOGIT_BIAS)
    min_p: float = Field(0.0, ge=0.0, le=1.0)  # 0 means no cut
    stop: tuple[str, ...] = Field(default=(), max_length=MAX_STOP_SEQUENCES)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    # Each generated token's log-probability and this many likeliest alternatives at its position,
    # from the model's own distribution (before any parameter above reshapes it); None: not kept.
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    # The same for each prompt token after the first (a completion's ``echo``); needs logprobs.
    prompt_logprobs: bool = False
    # What the answer may be, as an llguidance grammar (``apps/inference/grammars.py`` writes it
    # from a ``response_format``): each step may only pick a token it allows. None: free text.
    grammar: str | None = Field(None, min_length=1, max_length=MAX_GRAMMAR_CHARS)

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

    @field_validator("logit_bias")
    @classmethod
    def _bias_in_bounds(cls, value: dict[int, float]) -> dict[int, float]:
        for token, bias in value.items():
            if token < 0:
                raise ValueError(f"token id {token} is negative; ids start at 0")
            if not -100.0 <= bias <= 100.0:
                raise ValueError(f"the bias of token {token} is {bias}; it must be -100 to 100")
        return value

    @field_validator("prompt_logprobs")
    @classmethod
    def _prompt_logprobs_need_logprobs(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("logprobs") is None:
            raise ValueError("it needs logprobs set as well (0 to list no alternatives)")
        return value

    @property
    def is_greedy(self) -> bool:
        """The top logit as the model gives it, every step: nothing reshapes the logits."""
        return (
            self.temperature == 0.0
            and self.repetition_penalty == 1.0
            and not self.frequency_penalty
            and not self.presence_penalty
            and not self.logit_bias
            and self.grammar is None
        )

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
    # A Batch API request: any interactive request waits ahead of it and, on the llama.cpp
    # engine, runs while it pauses.
    batch: bool = False


@dataclass(frozen=True)
class TokenDelta:
    text: str
    token_ids: tuple[int, ...]  # the new tokens this delta covers (their text may be held back)
    # One entry per token in ``token_ids`` when the request keeps log-probabilities, in OpenAI's
    # chat shape: {"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}.
    logprobs: tuple[dict[str, Any], ...] = ()
    # The prompt's entries (the first token's logprob None), once, with the first delta.
    prompt_logprobs: tuple[dict[str, Any], ...] | None = None

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
