"""Which worker a request goes to: the one whose engine holds the start of its conversation.

The llama.cpp engine keeps the cells of the prompts it has read (prefix reuse,
``engines/llamacpp.py``), in its worker's memory. With several inference workers, the next turn of
a conversation is fast only on the worker that served the turn before, so every generation carries
a key that the requests of one conversation share (``conversation_key``), and a new request whose
key a generation already has goes to the queue of that generation's worker while it is live and
serving inference (Celery's ``worker_direct`` queues, one per worker, beside the shared one). Any
other request, and every request when that worker is gone, goes to the shared queue, where any
worker takes it.

A worker that dies between the choice and the claim strands the message on its own queue; the
request is then sent again to the shared queue like any lost message (``apps.core.queues``, after
REQUEUE_SECONDS).
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from apps.catalog.models import ModelVersion
from apps.core.models import Worker
from apps.core.queues import Queue

from .models import Generation

# A completion prompt shorter than this has too little to reuse to be worth steering.
PREFIX_CHARS = 256


def conversation_key(
    version: ModelVersion, *, messages: list[dict[str, str]] | None, prompt: str = ""
) -> str:
    """What every turn of one conversation with ``version`` shares: its messages up to and
    including the first user message (a later turn only appends to them; a first turn is all
    opening, so that its next turn finds where it was served), or a completion prompt's first
    PREFIX_CHARS characters. "" when there is nothing worth steering by."""
    if messages is not None:
        opening: list[dict[str, str]] = []
        for message in messages:
            opening.append({"role": message["role"], "content": message["content"]})
            if message["role"] == "user":
                break
        material = json.dumps(opening, ensure_ascii=False, sort_keys=True)
    elif len(prompt) >= PREFIX_CHARS:
        material = prompt[:PREFIX_CHARS]
    else:
        return ""
    return hashlib.sha256(f"{version.pk}\n{material}".encode()).hexdigest()


def worker_for(key: str) -> str:
    """The inference worker that served the latest generation with ``key`` while it is live, or
    "" (send it to the shared queue)."""
    if not key:
        return ""
    last = (
        Generation.objects.filter(affinity_key=key)
        .exclude(worker="")
        .order_by("-created_at")
        .values_list("worker", flat=True)
        .first()
    )
    if not last:
        return ""
    # Steer only to a worker that beat within two heartbeats (stricter than the reaper's
    # WORKER_LOST_SECONDS): a request sent to a worker that died waits for the requeue sweep.
    fresh = timezone.now() - timedelta(seconds=2 * settings.WORKER_HEARTBEAT_SECONDS)
    worker = Worker.objects.filter(hostname=last, last_seen__gte=fresh, stopped_at__isnull=True)
    queues = worker.values_list("queues", flat=True).first()
    return last if queues and Queue.INFERENCE in queues else ""
