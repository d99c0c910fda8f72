from celery import Task, shared_task

from .runner import batch_run


@shared_task(bind=True, acks_late=True, reject_on_worker_lost=True)
def run_batch(self: Task, batch_id: str) -> None:
    batch_run(batch_id=batch_id, worker=self.request.hostname or "")
