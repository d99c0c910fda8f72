from __future__ import annotations

import uuid

from django.http import Http404

from apps.accounts.models import User

from .models import Generation


def access_generation(user: User, generation_id: object) -> Generation:
    """The generation ``generation_id`` if ``user`` started it; 404 for missing and not-yours."""
    try:
        key = uuid.UUID(str(generation_id))
    except ValueError:
        raise Http404("No such generation") from None
    generation = (
        Generation.objects.select_related("model_version__model")
        .filter(pk=key, user_id=user.pk)
        .first()
        if user.is_authenticated
        else None
    )
    if generation is None:
        raise Http404("No such generation")
    return generation
