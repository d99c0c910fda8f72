"""Loading the configured models when a worker starts, so the first user does not wait for it."""

from __future__ import annotations

import logging
import threading

from django.conf import settings

logger = logging.getLogger(__name__)


def warm_models() -> None:
    from apps.catalog.models import LanguageModel

    from .services import version_load

    for slug in settings.INFERENCE_WARM_MODELS:
        model = LanguageModel.objects.filter(slug=slug, is_enabled=True).first()
        version = model.active_version if model else None
        if model is None or version is None:
            logger.warning("not warming %s: no enabled model with an active version", slug)
            continue
        version_load(version_id=version.pk)


def warm_models_in_background() -> None:
    def run() -> None:
        try:
            warm_models()
        except Exception:  # warming is an optimisation: a failure shows on the first request
            logger.exception("warming models failed")
        finally:
            from django.db import connection

            connection.close()

    threading.Thread(target=run, name="warm-models", daemon=True).start()
