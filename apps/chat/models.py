from __future__ import annotations

import uuid
from pathlib import PurePath

from django.conf import settings
from django.db import models

from apps.catalog.models import LanguageModel
from apps.inference.grammars import json_schema_grammar
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams

_DEFAULTS = SamplingParams()


class Conversation(models.Model):
    """A chat thread with its model and settings; reachable only by its owner."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="+")
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=_DEFAULTS.temperature)
    top_p = models.FloatField(default=_DEFAULTS.top_p)
    max_tokens = models.PositiveIntegerField(default=_DEFAULTS.max_tokens)
    # Answers are JSON valid against this schema (the settings panel's "JSON schema"); None: text.
    json_schema = models.JSONField(null=True, blank=True)
    pinned = models.BooleanField(default=False)
    # Deleted conversations are hidden at once and purged after UNDO_SECONDS (undo restores one).
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    UNDO_SECONDS = 600

    class Meta:
        ordering = ["-pinned", "-updated_at"]

    def __str__(self) -> str:
        # Not the title: the admin prints this, and titles are the user's own text.
        return f"conversation {self.pk}"

    @property
    def display_title(self) -> str:
        return self.title or "New chat"

    def sampling_settings(self) -> dict[str, float | int | str]:
        """What the conversation sets; the version's other defaults apply beneath it."""
        settings: dict[str, float | int | str] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.json_schema is not None:
            settings["grammar"] = json_schema_grammar(self.json_schema, param="json_schema")
        return settings


class Message(models.Model):
    """One turn. A user turn holds its text; an assistant turn is the output of its generation."""

    class Role(models.TextChoices):
        USER = "user"
        ASSISTANT = "assistant"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    content = models.TextField(blank=True)
    generation = models.OneToOneField(
        Generation, on_delete=models.SET_NULL, null=True, blank=True, related_name="message"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.role} message {self.pk}"

    @property
    def text(self) -> str:
        if self.role == self.Role.ASSISTANT and self.generation is not None:
            return self.generation.output
        return self.content


def _document_path(instance: Document, filename: str) -> str:
    # Generated names only: the client's file name is kept for display, never used as a path.
    return f"documents/{instance.owner_id}/{instance.id}{PurePath(instance.name).suffix.lower()}"


class Document(models.Model):
    """A file brought into a chat: kept under MEDIA_ROOT/documents/<owner>/ with the text read
    from it (what the prompt holds, in ``apps.core.documents``' form) and that text's tokens on
    the model it was attached for. Attached before its message is sent (``message`` is empty
    until then); reachable only by its owner."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="documents"
    )
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, null=True, blank=True, related_name="documents"
    )
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20)
    file = models.FileField(upload_to=_document_path, max_length=500)
    bytes = models.PositiveBigIntegerField()
    text = models.TextField()
    # The tokens of its block in the prompt, as the model it was attached for counts them (None:
    # that model's vocabulary is not readable from the web; the worker's count still applies).
    tokens = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Documents attached and never sent are removed after this long.
    UNSENT_SECONDS = 24 * 3600

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"document {self.pk}"


class Preset(models.Model):
    """A saved system prompt and parameters, applied to a conversation's settings in one click.
    Shipped presets have no owner and are everyone's; the others are their owner's alone."""

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="presets",
    )
    name = models.CharField(max_length=80)
    system_prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=_DEFAULTS.temperature)
    top_p = models.FloatField(default=_DEFAULTS.top_p)
    max_tokens = models.PositiveIntegerField(default=_DEFAULTS.max_tokens)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["owner_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="preset_name_per_owner")
        ]

    def __str__(self) -> str:
        return self.name
