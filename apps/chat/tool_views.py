"""The chat's tools beside conversations: completion mode (a raw prompt continued), compare (one
prompt to two models side by side) and classify (a text labelled by one of your classifiers)."""

from __future__ import annotations

from typing import cast

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, chat_models_for
from apps.core.errors import ServiceError
from apps.core.http import AuthedHttpRequest
from apps.inference.models import EmbeddingBatch
from apps.inference.services import classification_start
from apps.inference.streaming import finished

from . import services
from .forms import ClassifyForm, CompareForm, CompleteForm
from .selectors import completion_models_for


@login_required
@require_http_methods(["GET", "POST"])
def complete(request: AuthedHttpRequest) -> HttpResponse:
    """Completion mode: a raw prompt in, its continuation out, streamed (static/follow.js)."""
    models = completion_models_for(request.user)
    if request.method == "GET":
        form = CompleteForm(initial={"model": models[0].slug if models else ""})
        return render(request, "chat/complete.html", {"form": form, "models": models})
    form = CompleteForm(request.POST)
    template = "chat/complete.html#complete-result" if request.htmx else "chat/complete.html"
    context: dict[str, object] = {"form": form, "models": models}
    if not form.is_valid():
        return render(request, template, context, status=400)
    try:
        model = next(m for m in models if m.slug == form.cleaned_data["model"])
    except StopIteration:
        form.add_error("model", _("Pick a model from the list."))
        return render(request, template, context, status=400)
    try:
        context["generation"] = services.completion_mode_start(
            owner=request.user,
            model=model,
            prompt=form.cleaned_data["prompt"],
            settings=form.cleaned_data["settings"],
        )
    except ServiceError as exc:
        context["error"] = exc.message
        return render(request, template, context, status=400)
    return render(request, template, context, status=201)


@login_required
@require_http_methods(["GET", "POST"])
def compare(request: AuthedHttpRequest) -> HttpResponse:
    """One prompt to two models side by side; both answers stream at once (static/follow.js)."""
    models = chat_models_for(request.user)
    if request.method == "GET":
        slugs = [m.slug for m in models]
        a = request.GET.get("a") if request.GET.get("a") in slugs else (slugs[0] if slugs else "")
        b = request.GET.get("b") if request.GET.get("b") in slugs else (slugs[-1] if slugs else "")
        form = CompareForm(initial={"a": a, "b": b})
        return render(request, "chat/compare.html", {"form": form, "models": models})
    form = CompareForm(request.POST)
    template = "chat/compare.html#compare-result" if request.htmx else "chat/compare.html"
    context: dict[str, object] = {"form": form, "models": models}
    if not form.is_valid():
        return render(request, template, context, status=400)
    try:
        picked = [
            access_model(request.user, form.cleaned_data[k], task=LanguageModel.Task.CHAT)
            for k in ("a", "b")
        ]
        context["generations"] = services.chat_compare_start(
            owner=request.user,
            models=picked,
            text=form.cleaned_data["text"],
            settings=form.cleaned_data["settings"],
        )
    except (ServiceError, Http404) as exc:
        context["error"] = exc.message if isinstance(exc, ServiceError) else str(exc)
        return render(request, template, context, status=400)
    return render(request, template, context, status=201)


@login_required
@require_http_methods(["GET", "POST"])
async def classify(request: AuthedHttpRequest) -> HttpResponse:
    """The classification tab: type a text, see every label's score from one of your classifiers."""
    # Templates read request.user (a lazy database lookup): render them off the event loop.
    user = cast(User, await request.auser())  # login_required: never anonymous
    models = await sync_to_async(
        lambda: list(
            LanguageModel.objects.usable_by(user).for_task(LanguageModel.Task.CLASSIFICATION)
        )
    )()
    form = ClassifyForm(request.POST or None, initial={"model": request.GET.get("model", "")})
    context: dict[str, object] = {"form": form, "models": models}
    template = "chat/classify.html#classify-result" if request.htmx else "chat/classify.html"
    if request.method == "GET":
        return await sync_to_async(render)(request, "chat/classify.html", context)
    if not form.is_valid():
        return await sync_to_async(render)(request, template, context, status=400)

    def start() -> EmbeddingBatch:
        model = access_model(
            user, form.cleaned_data["model"], task=LanguageModel.Task.CLASSIFICATION
        )
        return classification_start(user=user, model=model, inputs=[form.cleaned_data["text"]])

    try:
        batch = await sync_to_async(start)()
    except Http404:
        context["error"] = _("That classifier is not available to you.")
        return await sync_to_async(render)(request, template, context, status=404)
    batch = await finished(EmbeddingBatch, batch.pk)
    if batch.status == EmbeddingBatch.Status.FAILED:
        context["error"] = batch.error_message
        return await sync_to_async(render)(request, template, context, status=400)
    result = (batch.results or [{}])[0]
    context["label"] = result["label"]
    context["scores"] = sorted(result["scores"].items(), key=lambda item: -item[1])
    return await sync_to_async(render)(request, template, context)
