from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from django_htmx.middleware import HtmxDetails

if TYPE_CHECKING:
    from apps.accounts.models import User


class AuthedHttpRequest(HttpRequest):
    """The request a ``login_required`` view gets, after django-htmx's middleware (for typing)."""

    user: User
    htmx: HtmxDetails
