"""What each app asks of the worker processes, registered from its ``AppConfig.ready``: sweeps
that a worker's heartbeat runs (reaping, requeueing), work to do once a worker has started
(warming models), and what a worker adds to its heartbeat row. The worker runtime
(``playground.worker``) runs them; this module only keeps the list, so every app can register
without importing the layer above it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Sweep:
    """``run`` at most once every ``every()`` seconds (0: at every heartbeat), in the workers
    that consume ``queue`` (None: every worker). Any worker may sweep at the same time as
    another: a sweep must be safe to run concurrently (compare-and-set writes, SKIP LOCKED)."""

    name: str
    run: Callable[[], object]
    every: Callable[[], float]
    queue: str | None = None


@dataclass(frozen=True)
class Hook:
    """``run`` in the workers that consume ``queue`` (None: every worker)."""

    name: str
    run: Callable[..., Any]
    queue: str | None = None


SWEEPS: list[Sweep] = []
ON_START: list[Hook] = []  # run(): once the worker is ready to take tasks
REPORTS: list[Hook] = []  # run() -> dict of Worker fields for the heartbeat row


def _add(registry: list[Any], item: Any) -> None:
    # ``ready`` may run more than once in one process (tests): register each name once.
    registry[:] = [existing for existing in registry if existing.name != item.name]
    registry.append(item)


def register_sweep(
    name: str,
    run: Callable[[], object],
    *,
    every: Callable[[], float] = lambda: 0.0,
    queue: str | None = None,
) -> None:
    _add(SWEEPS, Sweep(name, run, every, queue))


def on_worker_start(name: str, run: Callable[[], object], *, queue: str | None = None) -> None:
    _add(ON_START, Hook(name, run, queue))


def register_report(
    name: str, run: Callable[[], dict[str, Any]], *, queue: str | None = None
) -> None:
    _add(REPORTS, Hook(name, run, queue))


def applies(hook: Sweep | Hook, queues: list[str]) -> bool:
    return hook.queue is None or hook.queue in queues


# Set while a worker of this process shuts down (cleared when one starts): long work, such as a
# batch runner, hands its record back rather than holding the shutdown up. One flag for the
# process: its workers stop together (and a task's ``request.hostname`` is not always the
# worker's name under the thread pool).
stopping = threading.Event()
