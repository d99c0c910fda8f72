from django.apps import AppConfig
from django.conf import settings


class InferenceConfig(AppConfig):
    name = "apps.inference"
    label = "inference"

    def ready(self) -> None:
        """Register what inference asks of every worker (``apps.core.runtime``) and the
        workers' remote-control commands."""
        from apps.core import runtime
        from apps.core.queues import Queue

        from . import (
            control,  # noqa: F401  (defines the remote-control commands)
            runner,
        )
        from .engines import registry

        runtime.register_sweep("generations-reap", runner.generations_reap)
        runtime.register_sweep(
            "inference-requeue",
            runner.inference_requeue_stranded,
            every=lambda: settings.REQUEUE_SECONDS / 4,
        )
        # A model that finished loading may not fit the budget any more.
        runtime.register_sweep(
            "model-memory-budget",
            lambda: registry.enforce_budget(wait=False),
            queue=Queue.INFERENCE,
        )
        runtime.on_worker_start("warm-models", runner.warm_models, queue=Queue.INFERENCE)
        runtime.register_report("loaded-models", runner.worker_report, queue=Queue.INFERENCE)
