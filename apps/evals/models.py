"""Eval sets: the items a model version is measured on, each with its input and what a good
answer is. Reachable only by their owner."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.db import models


class EvalSet(models.Model):
    """A named list of items, uploaded as JSONL (every line checked first) or made from the
    shipped demo."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="eval_sets"
    )
    name = models.CharField(max_length=200)
    filename = models.CharField(max_length=255, blank=True)  # the upload's, for display
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        # Not the name: the admin prints this, and names are the user's own text.
        return f"eval set {self.pk}"

    @property
    def openai_id(self) -> str:
        return f"eval_{self.pk.hex}"


class EvalItem(models.Model):
    """One test: ``input`` (a string, or chat messages), the acceptable answers (``ideal``: one
    or more strings; empty for an item graded by its label or schema alone), and optionally the
    label a classifier should give, a JSON schema the answer must follow, and free metadata."""

    eval_set = models.ForeignKey(EvalSet, on_delete=models.CASCADE, related_name="items")
    line = models.PositiveIntegerField()  # the line of the upload it came from
    input = models.JSONField()
    ideal = models.JSONField(default=list)
    label = models.CharField(max_length=200, blank=True)
    schema = models.JSONField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["line"]
        constraints = [
            models.UniqueConstraint(fields=["eval_set", "line"], name="eval_item_line_per_set")
        ]

    def __str__(self) -> str:
        return f"eval item {self.pk}"

    @property
    def schema_text(self) -> str:
        """The schema as JSON text, for display ("" without one)."""
        return json.dumps(self.schema, ensure_ascii=False) if self.schema is not None else ""

    def messages(self) -> list[dict[str, Any]]:
        """The input as chat messages (a string is one user turn)."""
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return list(self.input)
