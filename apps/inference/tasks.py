from celery import Task, shared_task

from .runner import embedding_run, generation_run


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_generation(self: Task, generation_id: str) -> None:
    generation_run(generation_id=generation_id, worker=self.request.hostname or "")


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_embedding(self: Task, batch_id: str) -> None:
    embedding_run(batch_id=batch_id, worker=self.request.hostname or "")
