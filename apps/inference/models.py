from __future__ import annotations

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.db.models import Sum

from apps.catalog.models import ModelVersion
from apps.core.models import WorkRecord


class GenerationQuerySet(models.QuerySet["Generation"]):
    def in_flight(self) -> GenerationQuerySet:
        return self.filter(status__in=Generation.in_flight_states())


class Priority(models.TextChoices):
    """Whose turn comes first: an interactive request (the chat, the API) always overtakes a
    Batch API request, which uses the capacity interactive users leave idle."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


class ModelRequest(WorkRecord):
    """Work an account asked of a model version, from the chat or over the API with a key."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="%(class)s_set"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="+")
    priority = models.CharField(
        max_length=12, choices=Priority.choices, default=Priority.INTERACTIVE
    )

    class Meta(WorkRecord.Meta):
        abstract = True


MAX_END_USER = 256


class Generation(ModelRequest):
    """One request to a model, from the chat or the API: its input, output, state and figures.

    The worker writes ``output`` as it goes, with the token ids that make it (``output_ids``), so
    a reader always finds the text streamed so far, and a worker that takes over from a lost one
    continues from exactly those tokens.
    """

    class Kind(models.TextChoices):
        CHAT = "chat"
        COMPLETION = "completion"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    messages = models.JSONField(null=True, blank=True)  # chat input, as sent to the chat template
    prompt = models.TextField(blank=True)  # completion input
    params = models.JSONField(default=dict)
    # The API's ``user``: the caller's own name for whoever it asks on behalf of (for its audits).
    end_user = models.CharField(max_length=MAX_END_USER, blank=True)
    output = models.TextField(blank=True)
    # The generated token ids behind ``output`` (and any text still held back at a stop sequence).
    output_ids = models.JSONField(default=list, blank=True)
    # Per generated token, when the request asked for log-probabilities (``params["logprobs"]``
    # set): OpenAI's chat entry, {"token", "logprob", "bytes", "top_logprobs": [...]}.
    logprobs = models.JSONField(null=True, blank=True)
    # Per prompt token, for a completion that echoes its prompt with log-probabilities
    # (``params["prompt_logprobs"]``): the same entries; the first token's logprob is None.
    prompt_logprobs = models.JSONField(null=True, blank=True)
    finish_reason = models.CharField(max_length=20, blank=True)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(default=0)
    # Prompt tokens the engine found in its cache (an earlier turn, a shared system prompt).
    cached_tokens = models.PositiveIntegerField(default=0)
    # What the requests of one conversation share (``affinity.conversation_key``): the next turn
    # goes to the worker that served the last one, whose engine still holds its cells.
    affinity_key = models.CharField(max_length=64, blank=True)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)

    objects = GenerationQuerySet.as_manager()

    class Meta(ModelRequest.Meta):
        ordering = ["-created_at"]
        indexes = [
            *ModelRequest.Meta.indexes,
            models.Index(
                fields=["affinity_key", "-created_at"],
                name="generation_affinity",
                condition=~models.Q(affinity_key=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def param_summary(self) -> str:
        keys = ("temperature", "top_p", "max_tokens", "seed")
        return ", ".join(f"{k} {self.params[k]}" for k in keys if self.params.get(k) is not None)


class EmbeddingBatch(ModelRequest):
    """One request of texts to an encoder: embeddings (base64 float32 vectors) or classification
    (a label and the scores of every label per text), with its state and token count."""

    class Kind(models.TextChoices):
        EMBEDDINGS = "embeddings"
        CLASSIFICATION = "classification"

    kind = models.CharField(max_length=20, choices=Kind.choices, default=Kind.EMBEDDINGS)
    inputs = models.JSONField()
    vectors = models.JSONField(null=True, blank=True)
    results = models.JSONField(null=True, blank=True)  # classification: [{"label", "scores"}]
    prompt_tokens = models.PositiveIntegerField(default=0)

    class Meta(ModelRequest.Meta):
        pass

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"


class UsageQuerySet(models.QuerySet["UsageRecord"]):
    def since(self, moment: datetime) -> UsageQuerySet:
        return self.filter(created_at__gte=moment)

    def total_tokens(self) -> int:
        totals = self.aggregate(p=Sum("prompt_tokens"), c=Sum("completion_tokens"))
        return (totals["p"] or 0) + (totals["c"] or 0)


class UsageRecord(models.Model):
    """Tokens one request used, counted by the worker, for the chat and the API alike (streamed,
    cancelled and failed-midway requests included). The usage page and quotas read these."""

    class Source(models.TextChoices):
        CHAT = "chat"
        API = "api"
        BATCH = "batch"  # a request of a Batch API batch

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage"
    )
    api_key = models.ForeignKey(
        "accounts.ApiKey", on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    model = models.ForeignKey("catalog.LanguageModel", on_delete=models.CASCADE, related_name="+")
    source = models.CharField(max_length=10, choices=Source.choices)
    kind = models.CharField(max_length=20)  # chat, completion, embeddings or classification
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    generation = models.OneToOneField(
        Generation, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    embedding_batch = models.OneToOneField(
        EmbeddingBatch, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = UsageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["user", "created_at"])]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind} {self.prompt_tokens}+{self.completion_tokens}"
