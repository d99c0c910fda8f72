from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from apps.inference.models import Generation


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
    generation = models.OneToOneField(Generation, on_delete=models.PROTECT, related_name="+")
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
