from django.apps import AppConfig
from django.conf import settings


class ApiConfig(AppConfig):
    name = "apps.api"
    label = "api"

    def ready(self) -> None:
        """Register what the Batch API asks of the inference workers (``apps.core.runtime``):
        taking back the batches of lost workers, and sending lost runner messages again."""
        from apps.core import runtime
        from apps.core.queues import Queue

        from . import runner

        runtime.register_sweep("batches-reap", runner.batches_reap, queue=Queue.INFERENCE)
        runtime.register_sweep(
            "batches-requeue",
            runner.batches_requeue_stranded,
            every=lambda: settings.REQUEUE_SECONDS / 4,
            queue=Queue.INFERENCE,
        )
