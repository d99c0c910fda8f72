"""Each Celery worker writes a heartbeat row (``Worker``) every WORKER_HEARTBEAT_SECONDS: where it
runs, its device, the models it has loaded, its memory, the requests in flight and the queues it
serves. The admin's worker list and ``/readyz`` read these rows. The same thread fails the answers
of workers that are gone and sends again the messages a broker lost.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

logger = logging.getLogger(__name__)

_stops: dict[str, threading.Event] = {}


def start_heartbeat(*, hostname: str, queues: list[str]) -> None:
    """Beat for the worker ``hostname`` from a daemon thread until ``stop_heartbeat``."""
    if hostname in _stops:
        return
    stop = _stops[hostname] = threading.Event()
    started = timezone.now()
    last_sweep = 0.0

    def run() -> None:
        nonlocal last_sweep
        while True:
            try:
                beat(hostname=hostname, queues=queues, started_at=started)
                # Any worker notices another's death: answers it left running end failed.
                from .services import generations_reap

                generations_reap()
                if time.monotonic() - last_sweep >= settings.REQUEUE_SECONDS / 4:
                    last_sweep = time.monotonic()
                    requeue_stranded()
                if "inference" in queues:
                    from . import engines

                    engines.enforce_budget(wait=False)  # a model that finished loading may not fit
            except Exception:  # a missed beat shows as a late one; the next one tries again
                logger.exception("heartbeat of %s failed", hostname)
            finally:
                close_old_connections()
            if stop.wait(settings.WORKER_HEARTBEAT_SECONDS):
                return

    threading.Thread(target=run, name=f"heartbeat-{hostname}", daemon=True).start()


def requeue_stranded() -> int:
    """Send again the messages of work that has waited too long for a worker: the broker lost
    them (apps.core.queues). Every worker sweeps; each row is sent once per interval."""
    from apps.finetuning.services import finetune_requeue_stranded

    from .services import inference_requeue_stranded

    return inference_requeue_stranded() + finetune_requeue_stranded()


def stop_heartbeat(*, hostname: str) -> None:
    """Stop beating and mark the worker stopped (a clean shutdown, not a lost worker)."""
    from .models import Worker

    stop = _stops.pop(hostname, None)
    if stop is not None:
        stop.set()
    Worker.objects.filter(hostname=hostname).update(stopped_at=timezone.now())


def beat(*, hostname: str, queues: list[str], started_at: Any) -> None:
    from . import engines, telemetry
    from .models import Worker

    serves_models = "inference" in queues
    loaded = [vars(item) for item in engines.status()] if serves_models else []
    _prune()
    Worker.objects.update_or_create(
        hostname=hostname,
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queues": queues,
            "device": _device(),
            "loaded": loaded,
            "memory_bytes": _resident_bytes(),
            "models_bytes": sum(item["memory_bytes"] for item in loaded),
            "memory_budget_bytes": settings.INFERENCE_MEMORY_MB << 20,
            "gpu_memory_bytes": _gpu_memory_bytes(),
            "in_flight": sum(item["in_use"] for item in loaded),
            "metrics": telemetry.snapshot() if serves_models else {},
            "started_at": started_at,
            "last_seen": timezone.now(),
            "stopped_at": None,
        },
    )


def _prune() -> None:
    """Drop the rows of workers silent for a day that no running generation names."""
    from datetime import timedelta

    from .models import Generation, Worker

    running = Generation.objects.filter(status=Generation.Status.RUNNING).values("worker")
    Worker.objects.filter(last_seen__lt=timezone.now() - timedelta(days=1)).exclude(
        hostname__in=running
    ).delete()


def _torch() -> Any:
    # Only where a backend already imported it: a heartbeat never loads torch itself.
    return sys.modules.get("torch")


def _device() -> str:
    torch = _torch()
    if torch is not None and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return f"CPU, {os.cpu_count()} cores"


def _gpu_memory_bytes() -> int | None:
    torch = _torch()
    if torch is not None and torch.cuda.is_available():
        return int(torch.cuda.memory_allocated())
    return None


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the peak is the best figure at hand
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
