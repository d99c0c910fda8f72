"""The settings of a fine-tuning job: defaults and bounds, shared by the site form and the API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from apps.core.errors import invalid_input

# Learning rates that suit each kind of job and method when none is given.
DEFAULT_LEARNING_RATE = {
    ("chat", "lora"): 2e-3,
    ("chat", "full"): 5e-5,
    ("classification", "full"): 1e-4,
    ("classification", "head"): 1e-2,
}


class Hyperparameters(BaseModel):
    """Bounds are the contract: anything outside them is rejected, never clamped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_epochs: int = Field(3, ge=1, le=50)
    learning_rate: float | None = Field(None, gt=0.0, le=0.1)  # None: DEFAULT_LEARNING_RATE
    batch_size: int = Field(8, ge=1, le=64)
    lora_rank: int = Field(16, ge=1, le=256)
    lora_alpha: int = Field(32, ge=1, le=1024)
    max_seq_length: int = Field(512, ge=16, le=8192)
    # Share of the training rows held out for validation when no validation file is given.
    validation_fraction: float = Field(0.1, ge=0.0, le=0.5)
    # Classification: share of each label's rows held out as the test split (stratified).
    test_fraction: float = Field(0.2, gt=0.0, le=0.5)
    seed: int = Field(42, ge=0, le=2**31 - 1)

    @field_validator("lora_alpha")
    @classmethod
    def _alpha_fits_rank(cls, value: int, info: ValidationInfo) -> int:
        rank = info.data.get("lora_rank")
        if rank is not None and value > 16 * rank:
            raise ValueError(f"must be at most 16 times lora_rank ({16 * rank})")
        return value

    def learning_rate_for(self, kind: str, method: str) -> float:
        return self.learning_rate or DEFAULT_LEARNING_RATE[(kind, method)]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Hyperparameters:
        """Validate ``data``; raise ServiceError naming the first parameter at fault."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise invalid_input(exc) from None
