from celery import Task, shared_task
from django.conf import settings

from .runner import eval_run_run


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.EVAL_MAX_SECONDS,
    time_limit=settings.EVAL_MAX_SECONDS + 60,
)
def run_eval(self: Task, run_id: str) -> None:
    eval_run_run(run_id=run_id, worker=self.request.hostname or "")
