"""What both trainers share."""

from __future__ import annotations

from typing import Any

import torch


def warmup_then_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The learning rate climbs over the first tenth of the steps, then falls linearly to zero."""
    warmup = max(1, total_steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
