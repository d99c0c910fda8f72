from celery import shared_task

from .services import generation_run


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_generation(generation_id: str) -> None:
    generation_run(generation_id=generation_id)
