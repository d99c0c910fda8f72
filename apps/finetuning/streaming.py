"""Live job progress on the channel layer, one group per job.

Event type ``job.event`` (consumers implement ``job_event``): ``{"job": <state>, "event": <JobEvent
as_json>}``. Every event is a row before it is published, so a page that reads the rows after
joining the group (and drops ids it has) misses nothing.
"""

from __future__ import annotations

from typing import Any

from apps.core.channel_layers import publish_to

from .models import FineTuningJob, JobEvent


def job_group(job_id: object) -> str:
    return f"finetune.{job_id}"


def job_state(job: FineTuningJob) -> dict[str, Any]:
    return {
        "id": str(job.pk),
        "status": job.status,
        "step": job.step,
        "total_steps": job.total_steps,
        "eta_seconds": job.eta_seconds,
        "trained_tokens": job.trained_tokens,
        "error": job.error_message,
        "fine_tuned_model": job.fine_tuned_model,
    }


def publish_event(job: FineTuningJob, event: JobEvent) -> None:
    publish_to(
        job_group(job.pk), {"type": "job.event", "job": job_state(job), "event": event.as_json()}
    )
