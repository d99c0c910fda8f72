from celery import Task, shared_task

from . import control  # noqa: F401  (registers the workers' remote-control commands)
from .services import embedding_run, generation_run


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_generation(self: Task, generation_id: str) -> None:
    generation_run(generation_id=generation_id, worker=self.request.hostname or "")


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_embedding(batch_id: str) -> None:
    embedding_run(batch_id=batch_id)
