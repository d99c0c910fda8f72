from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.core.models import WorkRecord
from apps.inference.models import EmbeddingBatch, Generation


class StoredResponse(models.Model):
    """A response of the Responses API kept for its account (``store``, the default): what the
    request sent, and the generation that answers it (its output, state and usage).

    ``context`` is the conversation this answer follows, in chat-completions messages: the
    earlier turns of its ``previous_response_id`` chain and this request's input (without any
    ``instructions``, which OpenAI does not carry along a chain). The next response in the chain
    reads it and this answer, so a chain never walks its rows and survives an earlier one's
    deletion.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="responses"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    generation = models.OneToOneField(Generation, on_delete=models.CASCADE, related_name="+")
    previous = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model = models.CharField(max_length=200)  # the model's id as the request named it
    context = models.JSONField(default=list, blank=True)
    # This request's input items, in the Responses API's shape (GET .../input_items).
    input_items = models.JSONField(default=list)
    # What the response object echoes: instructions, tools, text, tool_choice, the sampling
    # values, metadata, background.
    request = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"resp_{self.pk.hex}"


class ApiFile(models.Model):
    """A file of the Batch API: a batch's input (``purpose`` batch, every line checked when it
    was uploaded), or the output and error files a batch writes. The text is kept here: the
    database is the record."""

    class Purpose(models.TextChoices):
        BATCH = "batch"
        BATCH_OUTPUT = "batch_output"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_files"
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    filename = models.CharField(max_length=255)
    content = models.TextField()
    bytes = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"file-{self.pk.hex} ({self.purpose})"

    @property
    def openai_id(self) -> str:
        return f"file-{self.pk.hex}"


class Batch(WorkRecord):
    """A Batch API batch: its requests (``BatchRequest``) run at batch priority, a few at a time,
    by one batch runner (``apps.api.runner``) that a worker claims like any work record, so a
    batch whose worker is lost is taken up by the next one where it stood."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batches"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    endpoint = models.CharField(max_length=40)
    # RESTRICT: the file goes only with its batch (an account deleted with both, say).
    input_file = models.ForeignKey(ApiFile, on_delete=models.RESTRICT, related_name="+")
    output_file = models.ForeignKey(
        ApiFile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error_file = models.ForeignKey(
        ApiFile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    completion_window = models.CharField(max_length=8, default="24h")
    metadata = models.JSONField(default=dict, blank=True)
    expires_at = models.DateTimeField()
    finalizing_at = models.DateTimeField(null=True, blank=True)
    cancelling_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)
    # Why no request starts now (the account's daily token quota is used up), or "".
    paused = models.CharField(max_length=300, blank=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta(WorkRecord.Meta):
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"batch_{self.pk.hex} ({self.status})"

    @property
    def openai_id(self) -> str:
        return f"batch_{self.pk.hex}"


class BatchRequest(models.Model):
    """One line of a batch's input file, and the work record that answers it (a generation, or
    an embedding batch), made once: a request never runs twice."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    batch = models.ForeignKey(Batch, on_delete=models.CASCADE, related_name="requests")
    line = models.PositiveIntegerField()  # in the input file, from 1
    custom_id = models.CharField(max_length=512)
    body = models.JSONField()
    generation = models.OneToOneField(
        Generation, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    embedding = models.OneToOneField(
        EmbeddingBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    started = models.BooleanField(default=False)  # its work record was made (or refused)
    # Why it could not start (the model was hidden meanwhile, say): the endpoint's error body.
    error = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["line"]
        constraints = [
            models.UniqueConstraint(fields=["batch", "custom_id"], name="batch_request_custom_id")
        ]

    def __str__(self) -> str:
        return f"{self.custom_id} of {self.batch_id}"
