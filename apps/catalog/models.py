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
        if user.is_authenticated:
            visible |= Q(visibility=LanguageModel.Visibility.PRIVATE, owner=user)
            listed = LanguageModel.objects.filter(
                Q(allowed_users=user) | Q(allowed_groups__in=user.groups.all())
            )
            visible |= Q(visibility=LanguageModel.Visibility.LISTED, pk__in=listed.values("pk"))
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
        LISTED = "listed", "Listed users and groups"
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
    # Who sees a model whose visibility is "listed" (staff do not, unless listed).
    allowed_users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="listed_models"
    )
    allowed_groups = models.ManyToManyField("auth.Group", blank=True, related_name="listed_models")
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
    """One loadable revision of a model: where its weights come from, how to load and prompt it.

    Versions are the unit of rollback: an admin adds one, activates it, and activates an older one
    to roll back (``catalog.services.version_activate``). Workers record whether it loaded.
    """

    class Source(models.TextChoices):
        PACKAGED = "packaged", "Packaged with the platform"
        LOCAL = "local", "Local folder"
        HUB = "hub", "Hub id"
        ADAPTER = "adapter", "LoRA adapter on a base version"

    class Dtype(models.TextChoices):
        AUTO = "auto", "The worker's default"
        FLOAT32 = "float32", "float32"
        BFLOAT16 = "bfloat16", "bfloat16"
        FLOAT16 = "float16", "float16"

    class Device(models.TextChoices):
        AUTO = "auto", "The worker's default"
        CPU = "cpu", "CPU"
        CUDA = "cuda", "GPU (CUDA)"

    class Engine(models.TextChoices):
        AUTO = "auto", "Auto: llama.cpp for a GGUF file, else the torch decoder"
        LLAMACPP = "llamacpp", "llama.cpp"
        TRANSFORMERS = "transformers", "The torch decoder (transformers weights)"

    class LoadStatus(models.TextChoices):
        UNKNOWN = "", "Not loaded yet"
        READY = "ready", "Loaded"
        FAILED = "failed", "Failed to load"

    model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="versions")
    label = models.CharField(max_length=100)
    source_kind = models.CharField(max_length=20, choices=Source.choices)
    # packaged: "<python package>/<file or folder inside it>"; local: a folder under MODELS_ROOT
    # (absolute, or relative to it); hub: a repo id; adapter: the folder of a peft adapter, applied
    # to ``base_version``.
    source = models.CharField(max_length=500)
    revision = models.CharField(
        max_length=100, blank=True, help_text="Hub sources only: a branch, tag or commit."
    )
    base_version = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="adapters"
    )
    context_length = models.PositiveIntegerField()
    dtype = models.CharField(max_length=10, choices=Dtype.choices, default=Dtype.AUTO)
    device = models.CharField(max_length=10, choices=Device.choices, default=Device.AUTO)
    # Which backend serves it; the worker's INFERENCE_ENGINE, when set to one, overrides it.
    engine = models.CharField(max_length=20, choices=Engine.choices, default=Engine.AUTO)
    # Sampling parameters (temperature, top_p, top_k, max_tokens, repetition_penalty, stop) used
    # where a request leaves them out; checked against the same bounds as requests.
    default_params = models.JSONField(default=dict, blank=True)
    chat_template = models.TextField(
        blank=True, help_text="A Jinja chat template used instead of the tokenizer's own."
    )
    is_active = models.BooleanField(default=False)
    load_status = models.CharField(
        max_length=10, choices=LoadStatus.choices, default=LoadStatus.UNKNOWN, blank=True
    )
    load_error = models.TextField(blank=True)
    load_checked_at = models.DateTimeField(null=True, blank=True)
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
        return self.key

    @property
    def key(self) -> str:
        """How workers name this version: ``slug@label``."""
        return f"{self.model.slug}@{self.label}"
