from celery import current_task, shared_task
from django.conf import settings

from .runner import dataset_analyze, finetune_job_run


@shared_task(acks_late=True, reject_on_worker_lost=True)
def analyze_dataset(dataset_id: str) -> None:
    dataset_analyze(dataset_id=dataset_id)


# The job enforces its own wall-clock limit (FINETUNE_MAX_SECONDS: apps.finetuning.runner):
# Celery's limits below act only where a training worker runs a prefork pool.
@shared_task(
    acks_late=True,
    reject_on_worker_lost=True,
    time_limit=int(settings.FINETUNE_MAX_SECONDS) + 600,
    soft_time_limit=int(settings.FINETUNE_MAX_SECONDS) + 300,
)
def run_finetune_job(job_id: str) -> None:
    finetune_job_run(job_id=job_id, worker=current_task.request.hostname or "unknown")
