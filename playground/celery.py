"""The Celery application. Configuration comes from Django settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")

app = Celery("playground")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_ready.connect
def _on_worker_ready(**kwargs: object) -> None:
    from apps.finetuning.reaper import start_reaper

    start_reaper()
    if "inference" in (app.amqp.queues.consume_from or {}):
        from apps.inference.warmup import warm_models_in_background

        warm_models_in_background()
