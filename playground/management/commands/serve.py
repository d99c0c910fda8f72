"""``manage.py serve``: the ASGI server, plus the embedded Celery workers when the broker is in memory.

With REDIS_URL set the workers are separate ``celery worker`` processes and this only serves HTTP
and WebSockets. Without it (the embedded default) the same Celery app, tasks and engine run in
workers inside this process, fed through Celery's in-memory broker, and they start as any worker
does (``playground.worker``).
"""

from __future__ import annotations

import contextlib

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core.queues import Queue


class Command(BaseCommand):
    help = "Serve the platform (and, on the embedded default, run the workers in-process)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args: object, **options: object) -> None:
        with contextlib.ExitStack() as stack:
            if settings.CELERY_BROKER_URL.startswith("memory://"):
                from playground.celery import app
                from playground.worker import embedded_worker

                stack.enter_context(
                    embedded_worker(
                        app,
                        hostname="inference@embedded",
                        queues=[Queue.INFERENCE.value],
                        concurrency=settings.INFERENCE_CONCURRENCY,
                    )
                )
                # Fine-tuning jobs, one at a time, beside the inference worker.
                stack.enter_context(
                    embedded_worker(
                        app,
                        hostname="training@embedded",
                        queues=[Queue.TRAINING.value],
                        concurrency=1,
                    )
                )
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
