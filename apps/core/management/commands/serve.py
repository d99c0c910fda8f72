"""``manage.py serve``: the ASGI server, plus the embedded Celery worker when the broker is in memory.

With REDIS_URL set the workers are separate ``celery worker`` processes and this only serves HTTP
and WebSockets. Without it (the embedded default) the same Celery app, tasks and engine run in a
worker inside this process, fed through Celery's in-memory broker.
"""

from __future__ import annotations

import contextlib
import logging

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core.queues import Queue

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Serve the platform (and, on the embedded default, run the inference worker in-process)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: object, **options: object) -> None:
        with contextlib.ExitStack() as stack:
            if settings.CELERY_BROKER_URL.startswith("memory://"):
                from celery.contrib.testing.worker import start_worker

                from playground.celery import app

                inference = stack.enter_context(
                    start_worker(
                        app,
                        pool="threads",
                        concurrency=settings.INFERENCE_CONCURRENCY,
                        queues=[Queue.INFERENCE.value],
                        perform_ping_check=False,
                        loglevel="INFO",
                        shutdown_timeout=30,
                    )
                )
                # Fine-tuning jobs, one at a time, beside the inference worker.
                training = stack.enter_context(
                    start_worker(
                        app,
                        pool="threads",
                        concurrency=1,
                        queues=[Queue.TRAINING.value],
                        perform_ping_check=False,
                        loglevel="INFO",
                        shutdown_timeout=30,
                        hostname="training@embedded",
                    )
                )
                # start_worker's test controller skips the worker_ready signal: start here what
                # it would start (heartbeats, warming, the reaper).
                from apps.inference.heartbeat import start_heartbeat, stop_heartbeat

                for worker, queue in ((inference, Queue.INFERENCE), (training, Queue.TRAINING)):
                    start_heartbeat(hostname=worker.hostname, queues=[queue.value])
                    stack.callback(stop_heartbeat, hostname=worker.hostname)
                from apps.inference.warmup import warm_models_in_background

                warm_models_in_background()
                from apps.finetuning.reaper import start_reaper

                start_reaper()
                self.stdout.write(
                    "Embedded inference and training workers started (in-memory broker)."
                )
            self.stdout.write(f"Serving on http://{options['host']}:{options['port']}")
            uvicorn.run(
                "playground.asgi:application",
                host=str(options["host"]),
                port=int(options["port"]),  # type: ignore[call-overload]
                log_level="info",
                lifespan="off",
                ws_ping_interval=20,
            )
