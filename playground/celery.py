"""The Celery application. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

app = Celery("playground")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _on_worker_ready(sender: object = None, **kwargs: object) -> None:
    from apps.finetuning.reaper import start_reaper
    from apps.inference.heartbeat import start_heartbeat

    start_reaper()
    queues = sorted(app.amqp.queues.consume_from or {})
    start_heartbeat(hostname=str(getattr(sender, "hostname", "celery")), queues=queues)
    if "inference" in (app.amqp.queues.consume_from or {}):
        from apps.inference.warmup import warm_models_in_background

        warm_models_in_background()


@worker_shutdown.connect
def _on_worker_shutdown(sender: object = None, **kwargs: object) -> None:
    from apps.inference.heartbeat import stop_heartbeat

    stop_heartbeat(hostname=str(getattr(sender, "hostname", "celery")))
