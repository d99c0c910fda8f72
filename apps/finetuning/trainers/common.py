"""What both trainers share."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from apps.finetuning.schemas import Hyperparameters

# (step, total_steps, epoch, train loss, learning rate, tokens seen so far) -> None; raises to stop
StepCallback = Callable[[int, int, int, float, float, int], None]
EpochCallback = Callable[[int, int], None]  # (epoch, step)


def warmup_then_linear_decay(optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
    """The learning rate climbs over the first tenth of the steps, then falls linearly to zero."""
    warmup = max(1, total_steps // 10)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_epochs(
    *,
    examples: Sequence[Any],
    hp: Hyperparameters,
    params: list[torch.nn.Parameter],
    learning_rate: float,
    weight_decay: float,
    batch_loss: Callable[[list[Any]], torch.Tensor],
    on_step: StepCallback,
    on_epoch: EpochCallback,
    begin_epoch: Callable[[], None],
) -> None:
    """The loop both trainers run: seeded shuffles, AdamW with warm-up and linear decay, gradient
    clipping; ``on_step`` after every optimizer step (it may raise to stop at once), ``on_epoch``
    after every epoch. ``examples`` carry ``input_ids`` (for the tokens-seen count)."""
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    total = hp.n_epochs * math.ceil(len(examples) / hp.batch_size)
    scheduler = warmup_then_linear_decay(optimizer, total)
    order = torch.Generator().manual_seed(hp.seed)
    step, tokens = 0, 0
    for epoch in range(1, hp.n_epochs + 1):
        begin_epoch()
        permutation = torch.randperm(len(examples), generator=order).tolist()
        for start in range(0, len(examples), hp.batch_size):
            batch = [examples[i] for i in permutation[start : start + hp.batch_size]]
            loss = batch_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            rate = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += sum(len(e.input_ids) for e in batch)
            on_step(step, total, epoch, float(loss.detach()), rate, tokens)
        on_epoch(epoch, step)
