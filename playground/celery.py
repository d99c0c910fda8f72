"""The Celery application. Configuration comes from Django settings (CELERY_* names). Every worker,
a ``celery worker`` process or the embedded default's, starts and stops through
``playground.worker``."""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown, worker_shutting_down

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

app = Celery("playground")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _on_worker_ready(sender: object = None, **kwargs: object) -> None:
    from .worker import consumer_queues, worker_started

    hostname = str(getattr(sender, "hostname", "celery"))
    worker_started(hostname=hostname, queues=consumer_queues(sender))


@worker_shutdown.connect
def _on_worker_shutdown(sender: object = None, **kwargs: object) -> None:
    from .worker import worker_stopped

    worker_stopped(hostname=str(getattr(sender, "hostname", "celery")))


@worker_shutting_down.connect
def _on_worker_shutting_down(sender: object = None, **kwargs: object) -> None:
    from apps.core import runtime

    runtime.stopping.set()
