"""The worker runtime: what every Celery worker process does beside running tasks.

One start function, ``worker_started``, runs for every worker: a ``celery worker`` process (from
Celery's ``worker_ready`` signal, see ``playground.celery``) and the embedded default's workers in
the server process (``embedded_workers``, which sends the same signal). It starts the heartbeat
thread and the apps' start-up hooks; ``worker_stopped`` marks the row stopped on a clean shutdown.

The heartbeat writes the worker's ``Worker`` row every WORKER_HEARTBEAT_SECONDS (where it runs,
its device and memory, what the apps report: loaded models, requests in flight, serving figures)
and then runs the sweeps the apps registered (``apps.core.runtime``): reaping the work of workers
that are gone, sending again what a broker lost, keeping the model memory within its budget.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from celery import Celery, signals
from celery.utils.nodenames import WORKER_DIRECT_EXCHANGE
from celery.worker import WorkController
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from apps.core import runtime
from apps.core.models import Worker

logger = logging.getLogger(__name__)

_stops: dict[str, threading.Event] = {}


def worker_started(*, hostname: str, queues: list[str]) -> None:
    """Start the heartbeat of the worker ``hostname`` (consuming ``queues``) and run the apps'
    start-up hooks for those queues. Idempotent per hostname."""
    runtime.stopping.clear()
    if hostname in _stops:
        return
    stop = _stops[hostname] = threading.Event()
    started = timezone.now()
    threading.Thread(
        target=_beat_forever,
        args=(hostname, queues, started, stop),
        name=f"heartbeat-{hostname}",
        daemon=True,
    ).start()
    for hook in runtime.ON_START:
        if runtime.applies(hook, queues):
            threading.Thread(target=_run_hook, args=(hook,), name=hook.name, daemon=True).start()


def worker_stopped(*, hostname: str) -> None:
    """Stop beating and mark the worker stopped (a clean shutdown, not a lost worker)."""
    stop = _stops.pop(hostname, None)
    if stop is not None:
        stop.set()
    Worker.objects.filter(hostname=hostname).update(stopped_at=timezone.now())


def _run_hook(hook: runtime.Hook) -> None:
    try:
        hook.run()
    except Exception:  # start-up work is an optimisation: a failure shows on first use
        logger.exception("worker start-up hook %s failed", hook.name)
    finally:
        close_old_connections()


def _beat_forever(
    hostname: str, queues: list[str], started: datetime, stop: threading.Event
) -> None:
    last_run: dict[str, float] = {}
    while True:
        try:
            beat(hostname=hostname, queues=queues, started_at=started)
        except Exception:  # a missed beat shows as a late one; the next one tries again
            logger.exception("heartbeat of %s failed", hostname)
        for sweep in runtime.SWEEPS:
            if not runtime.applies(sweep, queues):
                continue
            now = time.monotonic()
            if now - last_run.get(sweep.name, -1e9) < sweep.every():
                continue
            last_run[sweep.name] = now
            try:
                sweep.run()
            except Exception:  # the database may be away a moment; the next beat tries again
                logger.exception("sweep %s of %s failed", sweep.name, hostname)
        close_old_connections()
        if stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
            return


def beat(*, hostname: str, queues: list[str], started_at: datetime) -> None:
    """Write the heartbeat row of ``hostname`` now."""
    reported: dict[str, Any] = {}
    for hook in runtime.REPORTS:
        if runtime.applies(hook, queues):
            reported.update(hook.run())
    Worker.objects.update_or_create(
        hostname=hostname,
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "device": _device(),
            "loaded": [],
            "models_bytes": 0,
            "memory_budget_bytes": 0,
            "in_flight": 0,
            "metrics": {},
            **reported,
            "memory_bytes": _resident_bytes(),
            "gpu_memory_bytes": _gpu_memory_bytes(),
            "started_at": started_at,
            "last_seen": timezone.now(),
            "stopped_at": None,
        },
    )


def _cuda() -> Any:
    """torch.cuda where a backend has finished importing torch (a heartbeat never imports it, and
    a module another thread is still importing may lack its attributes yet)."""
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    try:
        return cuda if cuda is not None and cuda.is_available() else None
    except Exception:
        return None


def _device() -> str:
    cuda = _cuda()
    if cuda is not None:
        props = cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return f"CPU, {os.cpu_count()} cores"


def _gpu_memory_bytes() -> int | None:
    cuda = _cuda()
    return int(cuda.memory_allocated()) if cuda is not None else None


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best figure at hand
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- the embedded default ----------------------------------------------------------------------


class _EmbeddedWorkController(WorkController):
    """A Celery worker run as threads of the server process. Celery's own worker command sends
    ``worker_ready`` once its consumer is up; this does the same, so the embedded workers start
    exactly as a ``celery worker`` process does."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        signals.worker_ready.send(sender=consumer)
        logger.info("%s ready.", self.hostname)
        self.ready.set()


@contextlib.contextmanager
def embedded_worker(
    app: Celery, *, hostname: str, queues: list[str], concurrency: int, timeout: float = 60
) -> Iterator[WorkController]:
    """A Celery worker for ``queues`` on threads of this process, until the block ends (then a
    warm shutdown: running tasks finish, within ``timeout``)."""
    app.finalize()
    app.set_current()
    worker = _EmbeddedWorkController(
        app=app,
        hostname=hostname,
        queues=queues,
        pool="threads",
        concurrency=concurrency,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="INFO",
    )
    thread = threading.Thread(target=worker.start, name=f"celery-{hostname}", daemon=True)
    thread.start()
    if not worker.ready.wait(timeout):
        raise RuntimeError(f"the embedded worker {hostname} did not start within {timeout:g} s")
    try:
        yield worker
    finally:
        runtime.stopping.set()
        worker.stop(in_sighandler=False)
        thread.join(timeout)


def consumer_queues(consumer: Any) -> list[str]:
    """The shared queues a ready Celery consumer takes tasks from (not its own direct queue)."""
    task_consumer = getattr(consumer, "task_consumer", None)
    if task_consumer is not None:
        queues = task_consumer.queues
    else:
        queues = (consumer.app.amqp.queues.consume_from or {}).values()
    return sorted(q.name for q in queues if q.exchange.name != WORKER_DIRECT_EXCHANGE.name)
