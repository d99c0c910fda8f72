from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class User(AbstractUser):
    """The account. Custom from the first migration so fields can be added without a swap."""

    # Tokens (prompt + completion, chat and API together) the account may use per UTC day.
    daily_token_quota = models.PositiveBigIntegerField(
        null=True, blank=True, help_text=_("Empty: no limit.")
    )
    # The site's language for this account (the top bar's switch); empty: the browser's.
    language = models.CharField(
        max_length=10, blank=True, choices=settings.LANGUAGES, verbose_name=_("language")
    )


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        """Neither revoked nor expired."""
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=timezone.now())
        )


class ApiKey(models.Model):
    """A key a program uses for /v1. The database keeps a short prefix to find the row and an HMAC
    of the whole key to check it; the key itself is shown once, when it is issued."""

    class Scope(models.TextChoices):
        INFERENCE = "inference", _("Inference")
        FINE_TUNING = "fine-tuning", _("Fine-tuning")
        READ_ONLY = "read-only", _("Read only")

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    requests_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: the platform default (API_REQUESTS_PER_MINUTE)."
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > timezone.now()

    @property
    def scope_labels(self) -> list[str]:
        """The key's scopes as people read them, in the page's language."""
        labels = dict(self.Scope.choices)
        return [str(labels.get(scope, scope)) for scope in self.scopes]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes
