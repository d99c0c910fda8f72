"""The web side of inference: building a request's parameters, starting and stopping generations
and encoder batches, and an admin's actions on workers. The worker side is ``runner.py``."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from django.db import transaction

from apps.accounts.models import ApiKey, User
from apps.audit.models import AuditEntry
from apps.audit.services import audit_record
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.selectors import active_version
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.core.models import Worker
from apps.core.queues import Queue, enqueue_on_commit
from apps.core.work import work_cancel

from . import affinity, control
from .models import EmbeddingBatch, Generation, Priority
from .protocol import SamplingParams
from .streaming import publish_done

# The most new tokens an admin's test prompt asks for.
TEST_PROMPT_MAX_TOKENS = 128


def sampling_params_for(
    version: ModelVersion,
    settings: Mapping[str, Any] | None = None,
    *,
    fallback: Mapping[str, Any] | None = None,
    new_seed: bool = False,
) -> SamplingParams:
    """The parameters a request to ``version`` runs with, in one precedence (each step overrides
    the ones before it):

    1. the bounds' own defaults (``SamplingParams``);
    2. ``fallback``, the caller's house defaults (OpenAI's temperature 1 for the API, greedy for
       an admin's test prompt);
    3. the version's ``default_params`` (set in the admin);
    4. ``settings``: what the request, the conversation or the form sets (None means not set);
    5. with ``new_seed``, a random seed where none is set, so the answer can be run again exactly.

    Raises ServiceError naming the parameter at fault when the result is out of bounds.
    """
    values: dict[str, Any] = {**(fallback or {}), **version.default_params}
    values.update({k: v for k, v in (settings or {}).items() if v is not None})
    if new_seed and values.get("seed") is None:
        values["seed"] = secrets.randbelow(2**31)
    return SamplingParams.parse(values)


@transaction.atomic
def generation_start(
    *,
    user: User,
    version: ModelVersion,
    params: SamplingParams,
    messages: list[dict[str, str]] | None = None,
    prompt: str = "",
    api_key: ApiKey | None = None,
    n: int = 1,
    end_user: str = "",
    priority: str = Priority.INTERACTIVE,
) -> list[Generation]:
    """Record ``n`` generations (chat ``messages``, or a raw ``prompt``) and enqueue each on the
    inference queue once the transaction commits (on the queue of the worker that served the
    conversation's last turn while it is live: ``affinity``). With a seed, choice ``i`` gets ``seed + i``, so
    the choices differ and each repeats.

    Precondition: ``version`` is the active version of a model that came through
    ``access_model`` for ``user`` (or an admin's test); ``params`` came from
    ``sampling_params_for``. Runs inside the caller's transaction when there is one.
    """
    from .tasks import run_generation

    key = affinity.conversation_key(version, messages=messages, prompt=prompt)
    worker = affinity.worker_for(key)
    generations = []
    for i in range(n):
        choice = params
        if params.seed is not None and i:
            choice = params.model_copy(update={"seed": params.seed + i})
        generation = Generation.objects.create(
            user=user,
            api_key=api_key,
            model_version=version,
            kind=Generation.Kind.CHAT if messages is not None else Generation.Kind.COMPLETION,
            messages=messages,
            prompt=prompt,
            params=choice.model_dump(mode="json"),
            end_user=end_user,
            affinity_key=key,
            priority=priority,
        )
        enqueue_on_commit(run_generation, generation.pk, worker=worker)
        generations.append(generation)
    return generations


def generation_cancel(*, generation: Generation) -> bool:
    """Stop ``generation``, keeping the text so far. False if it had already finished.

    One still queued is cancelled here and now (a worker that picks it up later leaves it alone),
    so a stop works even while no worker is there; a running one is stopped by its worker, which
    polls ``cancel_requested``.
    """
    outcome = work_cancel(generation, finish_reason="cancelled")
    if outcome == "cancelled":
        transaction.on_commit(
            lambda: publish_done(Generation, generation.pk, Generation.Status.CANCELLED)
        )
    return bool(outcome)


@transaction.atomic
def embedding_start(
    *,
    user: User,
    version: ModelVersion,
    inputs: list[str],
    api_key: ApiKey | None = None,
    kind: str = EmbeddingBatch.Kind.EMBEDDINGS,
    priority: str = Priority.INTERACTIVE,
) -> EmbeddingBatch:
    """Record an embeddings (or classification) request and enqueue it once the transaction
    commits. Precondition: ``version`` came through ``access_model`` for ``user``, has the task
    that ``kind`` needs, and ``inputs`` are validated."""
    from .tasks import run_embedding

    batch = EmbeddingBatch.objects.create(
        user=user,
        model_version=version,
        inputs=inputs,
        api_key=api_key,
        kind=kind,
        priority=priority,
    )
    enqueue_on_commit(run_embedding, batch.pk)
    return batch


def classification_start(
    *, user: User, model: LanguageModel, inputs: list[str], api_key: ApiKey | None = None
) -> EmbeddingBatch:
    """Label ``inputs`` with the classifier ``model`` (the chat's classify tab and the API).
    Precondition: ``model`` came from ``access_model`` for ``user``. ServiceError, nothing
    written, when it is not a classifier."""
    if model.task != LanguageModel.Task.CLASSIFICATION:
        raise ServiceError(
            ErrorCode.INVALID_PARAMETER,
            f"The model {quoted(model.slug)} serves {model.task}, not classification. Train one on "
            "the fine-tuning page.",
            param="model",
        )
    return embedding_start(
        user=user,
        version=active_version(model),
        inputs=inputs,
        api_key=api_key,
        kind=EmbeddingBatch.Kind.CLASSIFICATION,
    )


def version_test_prompt(*, version: ModelVersion, actor: User, prompt: str) -> Generation:
    """An admin's test of ``version`` (active or not): one generation of the admin's own, greedy
    unless the version's defaults say otherwise, and at most TEST_PROMPT_MAX_TOKENS new tokens,
    through a worker like any other. Precondition: the version's model is a chat or completion
    model."""
    params = sampling_params_for(
        version, fallback={"temperature": 0.0, "max_tokens": TEST_PROMPT_MAX_TOKENS}
    )
    params = params.model_copy(
        update={"max_tokens": min(params.max_tokens, TEST_PROMPT_MAX_TOKENS)}
    )
    chat = version.model.task == LanguageModel.Task.CHAT
    with transaction.atomic():
        [generation] = generation_start(
            user=actor,
            version=version,
            params=params,
            messages=[{"role": "user", "content": prompt}] if chat else None,
            prompt="" if chat else prompt,
        )
        audit_record(
            actor=actor,
            action=AuditEntry.Action.TEST,
            target=version,
            changes={"generation": str(generation.pk)},
        )
    return generation


def version_load_on_workers(*, version: ModelVersion, actor: User) -> dict[str, str]:
    """Ask every live inference worker to load ``version`` (in the background; the worker list
    shows it ready). Audited. Returns each worker's answer by name; ServiceError, nothing
    audited, when no worker is live."""
    if not Worker.objects.serving(Queue.INFERENCE):
        raise ServiceError(ErrorCode.MODEL_NOT_FOUND, "No inference worker is live.")
    return _broadcast(
        control.LOAD, {"version_id": version.pk}, version, actor, AuditEntry.Action.LOAD
    )


def version_unload_from_workers(*, version: ModelVersion, actor: User) -> dict[str, str]:
    """Ask every live inference worker to unload ``version`` once its requests end. Audited.
    Returns each worker's answer by name ({} when none is live)."""
    return _broadcast(
        control.UNLOAD, {"key": version.key}, version, actor, AuditEntry.Action.UNLOAD
    )


def _broadcast(
    command: str, arguments: dict[str, Any], version: ModelVersion, actor: User, action: str
) -> dict[str, str]:
    hostnames = Worker.objects.serving(Queue.INFERENCE)
    answers = control.broadcast(command, arguments, hostnames) if hostnames else {}
    audit_record(actor=actor, action=action, target=version, changes={"workers": answers})
    return answers
