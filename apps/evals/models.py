"""Eval sets: the items a model version is measured on, each with its input and what a good
answer is. Reachable only by their owner."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.db import models

from apps.core.models import WorkRecord


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


class EvalRun(WorkRecord):
    """One eval set answered by one model version with one set of sampling parameters, and
    graded by ``graders`` (``apps.evals.graders.GRADERS`` configurations). A work record a
    worker claims: its runner (``apps.evals.runner``) keeps some of the items in flight as
    generations at batch priority, grades each as it ends, and at the end writes
    ``aggregates`` (per grader: the mean score with its bootstrap interval, and the counts), which
    ``apps.evals.runner.aggregates`` recomputes from the stored grades the same way."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="eval_runs"
    )
    eval_set = models.ForeignKey(EvalSet, on_delete=models.CASCADE, related_name="runs")
    model_version = models.ForeignKey(
        "catalog.ModelVersion", on_delete=models.PROTECT, related_name="eval_runs"
    )
    params = models.JSONField()  # the sampling parameters every item is answered with
    graders = models.JSONField()
    seed = models.PositiveIntegerField(default=0)  # the bootstrap's
    paused = models.CharField(max_length=300, blank=True)
    total = models.PositiveIntegerField(default=0)
    graded = models.PositiveIntegerField(default=0)
    aggregates = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"eval run {self.pk}"

    @property
    def openai_id(self) -> str:
        return f"evalrun_{self.pk.hex}"


class EvalResult(models.Model):
    """One item of a run: the generation that answered it (made once: ``started`` is set in the
    same transaction) and, once it ended, its grades, one per grader in the run's order
    (``{"passed", "score", "reason"}``), written once (``graded_at``)."""

    run = models.ForeignKey(EvalRun, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey(EvalItem, on_delete=models.CASCADE, related_name="+")
    started = models.BooleanField(default=False)
    generation = models.OneToOneField(
        "inference.Generation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    grades = models.JSONField(null=True, blank=True)
    errored = models.TextField(blank=True)  # why the item has no answer to grade
    graded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["item__line"]
        constraints = [
            models.UniqueConstraint(fields=["run", "item"], name="eval_result_once_per_item")
        ]

    def __str__(self) -> str:
        return f"eval result {self.pk}"
