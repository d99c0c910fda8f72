from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    """The composition root as an app: its ``serve`` command, the worker runtime and the ops
    views live here, above every feature app."""

    name = "playground"
    label = "playground"

    def ready(self) -> None:
        from apps.core import runtime
        from apps.core.metrics import REGISTRY
        from apps.core.work import worker_rows_prune

        from .metrics import PlatformCollector

        REGISTRY.register(PlatformCollector())
        # Rows of workers silent for a day go, once nothing they ran is still working.
        runtime.register_sweep("worker-rows-prune", worker_rows_prune, every=lambda: 60.0)
