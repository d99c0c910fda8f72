from django.apps import AppConfig
from django.conf import settings


class EvalsConfig(AppConfig):
    name = "apps.evals"
    label = "evals"

    def ready(self) -> None:
        """Register what eval runs ask of the inference workers (``apps.core.runtime``): taking
        back the runs of lost workers, and sending lost runner messages again."""
        from apps.core import runtime
        from apps.core.queues import Queue

        from . import runner

        runtime.register_sweep("eval-runs-reap", runner.eval_runs_reap, queue=Queue.INFERENCE)
        runtime.register_sweep(
            "eval-runs-requeue",
            runner.eval_runs_requeue_stranded,
            every=lambda: settings.REQUEUE_SECONDS / 4,
            queue=Queue.INFERENCE,
        )
