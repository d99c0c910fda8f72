"""Celery queues, one per workload, and how work is sent to them.

The database is the record of work to do; a broker message is only the doorbell. A row waiting
for a worker (a queued generation, embedding batch or fine-tuning job, an uncounted dataset)
carries ``sent_at``, when its message was last sent. A message can be lost: the web process could
not reach the broker, or Redis restarted without its data. So every worker's heartbeat rings again
for rows that have waited longer than REQUEUE_SECONDS (``apps.core.work.work_requeue_stale``). A
duplicate message is harmless: workers claim a row with a compare-and-set.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from celery.utils.nodenames import worker_direct
from django.db import transaction
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What a broker that is down or restarting raises at the sender.
BROKER_ERRORS = (OperationalError, RedisError)


class Queue(StrEnum):
    INFERENCE = "inference"
    TRAINING = "training"


def enqueue_on_commit(task: Any, row_id: object, *, worker: str = "") -> None:
    """Send ``task(str(row_id))`` once the current transaction commits: to its workload's shared
    queue, or with ``worker`` to that worker's own queue (CELERY_WORKER_DIRECT). A broker that
    cannot take it is logged, not raised: the row is saved and waiting, and the requeue sweep
    sends it again (to the shared queue)."""

    def send() -> None:
        try:
            if worker:
                task.apply_async((str(row_id),), queue=worker_direct(worker))
            else:
                task.delay(str(row_id))
        except BROKER_ERRORS as exc:
            logger.warning(
                "could not send %s(%s), it will be sent again: %s", task.name, row_id, exc
            )

    transaction.on_commit(send)
