from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEntry(models.Model):
    """Who changed what, and when. Rows are only ever added (the admin shows them read-only)."""

    class Action(models.TextChoices):
        CREATE = "create", "Created"
        UPDATE = "update", "Changed"
        DELETE = "delete", "Deleted"
        ACTIVATE = "activate", "Activated version"
        ISSUE = "issue", "Issued key"
        REVOKE = "revoke", "Revoked key"
        LOAD = "load", "Loaded on workers"
        UNLOAD = "unload", "Unloaded from workers"
        TEST = "test", "Sent a test prompt"
        VIEW = "view", "Viewed private content"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Kept when the account is deleted: the name is copied into ``actor_name``.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    actor_name = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    target_type = models.CharField(max_length=100)  # "<app label>.<model name>"
    target_id = models.CharField(max_length=64)
    target_repr = models.CharField(max_length=300)
    # {"field": [before, after]} for changes; other actions may carry their own details.
    changes = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return (
            f"{self.actor_name or 'system'} {self.get_action_display().lower()} {self.target_repr}"
        )
