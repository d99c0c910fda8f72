from django.apps import AppConfig
from django.conf import settings


class FinetuningConfig(AppConfig):
    name = "apps.finetuning"
    label = "finetuning"

    def ready(self) -> None:
        """Register the sweeps fine-tuning asks of every worker's heartbeat
        (``apps.core.runtime``): jobs of lost workers or past their time limit end failed, and
        work a broker lost is sent again."""
        from apps.core import runtime

        from . import runner

        runtime.register_sweep("finetune-jobs-reap", runner.finetune_jobs_reap)
        runtime.register_sweep(
            "finetune-requeue",
            runner.finetune_requeue_stranded,
            every=lambda: settings.REQUEUE_SECONDS / 4,
        )
