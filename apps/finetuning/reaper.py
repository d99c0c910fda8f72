"""A thread in every worker process that fails fine-tuning jobs whose worker is gone. (Work a
restarted broker lost is sent again by the worker heartbeat: apps.inference.heartbeat.)

A job's own worker cannot report its death, so others must notice the missing heartbeat. Job reads
(the pages and the API) reap too, so a job never looks "running" for long, even with no worker up.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)


def start_reaper() -> None:
    def run() -> None:
        from .services import finetune_jobs_reap

        interval = max(1.0, settings.FINETUNE_HEARTBEAT_TIMEOUT / 4)
        while True:
            try:
                finetune_jobs_reap()
            except Exception:  # the database may be away for a while; try again later
                logger.exception("reaping lost fine-tuning jobs failed")
                connection.close()
            threading.Event().wait(interval)

    threading.Thread(target=run, name="finetune-reaper", daemon=True).start()
