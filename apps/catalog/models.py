from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from apps.accounts.models import User


class ModelQuerySet(models.QuerySet["LanguageModel"]):
    def usable_by(self, user: User) -> ModelQuerySet:
        """Enabled models with an active version that ``user`` may see."""
        visible = Q(visibility=LanguageModel.Visibility.PUBLIC)
        if user.is_staff:
            visible |= Q(visibility=LanguageModel.Visibility.STAFF)
        return self.filter(visible, is_enabled=True, versions__is_active=True).distinct()

    def for_task(self, task: str) -> ModelQuerySet:
        return self.filter(task=task)


class LanguageModel(models.Model):
    """A model users pick by its slug (``smollm2-135m-instruct``); what answers is its active version."""

    class Task(models.TextChoices):
        CHAT = "chat", "Chat"
        COMPLETION = "completion", "Completion"
        EMBEDDINGS = "embeddings", "Embeddings"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Everyone"
        STAFF = "staff", "Staff only"

    slug = models.SlugField(max_length=200, unique=True)
    display_name = models.CharField(max_length=200)
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CHAT)
    description = models.TextField(blank=True)
    is_enabled = models.BooleanField(default=True)
    visibility = models.CharField(
        max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = ModelQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def active_version(self) -> ModelVersion | None:
        return self.versions.filter(is_active=True).first()


class ModelVersion(models.Model):
    """One loadable revision of a model: where its weights come from and how large its context is."""

    class Source(models.TextChoices):
        PACKAGED = "packaged", "Packaged with the platform"
        LOCAL = "local", "Local folder"
        HUB = "hub", "Hub id"

    model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="versions")
    label = models.CharField(max_length=100)
    source_kind = models.CharField(max_length=20, choices=Source.choices)
    # packaged: "<python package>/<file or folder inside it>"; local: a path; hub: a repo id.
    source = models.CharField(max_length=500)
    context_length = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "label"], name="catalog_version_label_unique"),
            models.UniqueConstraint(
                fields=["model"], condition=Q(is_active=True), name="catalog_one_active_version"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.slug}@{self.label}"
