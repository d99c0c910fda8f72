from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

if TYPE_CHECKING:
    from apps.accounts.models import User


class ModelQuerySet(models.QuerySet["LanguageModel"]):
    def usable_by(self, user: User) -> ModelQuerySet:
        """Enabled models with an active version that ``user`` may see."""
        visible = Q(visibility=LanguageModel.Visibility.PUBLIC)
        visible |= Q(visibility=LanguageModel.Visibility.PRIVATE, owner=user)
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
        CLASSIFICATION = "classification", "Text classification"

    class Visibility(models.TextChoices):
        PUBLIC = "public", "Everyone"
        STAFF = "staff", "Staff only"
        PRIVATE = "private", "Its owner only"

    # Fine-tuned models carry colons: ``ft:smollm2-135m-instruct:<suffix>:<short id>``.
    slug = models.CharField(
        max_length=200,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9][a-z0-9._:-]*$",
                "Use lower-case letters, digits, '.', '_', ':' and '-'.",
            )
        ],
    )
    display_name = models.CharField(max_length=200)
    task = models.CharField(max_length=20, choices=Task.choices, default=Task.CHAT)
    description = models.TextField(blank=True)
    is_enabled = models.BooleanField(default=True)
    visibility = models.CharField(
        max_length=20, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    # Set on models users made themselves (fine-tuned ones); visibility "private" means this user.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="own_models",
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
        ADAPTER = "adapter", "LoRA adapter on a base version"

    model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="versions")
    label = models.CharField(max_length=100)
    source_kind = models.CharField(max_length=20, choices=Source.choices)
    # packaged: "<python package>/<file or folder inside it>"; local: a path; hub: a repo id;
    # adapter: the folder of a peft adapter, applied to ``base_version``.
    source = models.CharField(max_length=500)
    base_version = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="adapters"
    )
    context_length = models.PositiveIntegerField()
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "label"], name="catalog_version_label_unique"),
            models.UniqueConstraint(
                fields=["model"], condition=Q(is_active=True), name="catalog_one_active_version"
            ),
            models.CheckConstraint(
                condition=Q(source_kind="adapter", base_version__isnull=False)
                | (~Q(source_kind="adapter") & Q(base_version__isnull=True)),
                name="catalog_adapter_has_base",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model.slug}@{self.label}"
