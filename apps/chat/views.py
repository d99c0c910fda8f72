from __future__ import annotations

import contextlib
import json
from typing import cast

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.accounts.models import User
from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, active_version, chat_models_for
from apps.core.errors import ErrorCode, ServiceError
from apps.core.http import AuthedHttpRequest

from . import exports, services
from .forms import ClassifyForm, CompareForm, CompleteForm, RenameForm, SettingsForm
from .models import Conversation
from .selectors import (
    access_conversation,
    access_preset,
    completion_models_for,
    conversation_messages,
    conversations_for,
    deleted_conversation,
    presets_for,
)


def _page(
    request: AuthedHttpRequest,
    conversation: Conversation | None = None,
    *,
    form: SettingsForm | None = None,
    status: int = 200,
    extra: dict[str, object] | None = None,
) -> HttpResponse:
    query = request.GET.get("q", "")
    context: dict[str, object] = {
        "conversations": conversations_for(request.user, query),
        "query": query,
        "conversation": conversation,
        **_settings_context(request, conversation, form),
        **(extra or {}),
    }
    if conversation is not None:
        context["messages_list"] = conversation_messages(conversation)
    return render(request, "chat/conversation.html", context, status=status)


def _settings_context(
    request: AuthedHttpRequest, conversation: Conversation | None, form: SettingsForm | None
) -> dict[str, object]:
    context: dict[str, object] = {
        "models": chat_models_for(request.user),
        "presets": presets_for(request.user),
    }
    if conversation is not None:
        context["form"] = form or _settings_form(conversation)
    return context


def _settings_form(conversation: Conversation) -> SettingsForm:
    return SettingsForm(
        initial={
            "model": conversation.model.slug,
            "system_prompt": conversation.system_prompt,
            "temperature": conversation.temperature,
            "top_p": conversation.top_p,
            "max_tokens": conversation.max_tokens,
        }
    )


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("chat-index" if request.user.is_authenticated else "accounts-login")


@login_required
@require_GET
def chat_index(request: AuthedHttpRequest) -> HttpResponse:
    """The chat page without a conversation open; ``?undo=<id>`` offers to restore one just
    deleted."""
    extra: dict[str, object] = {}
    undo = request.GET.get("undo")
    if undo:
        with contextlib.suppress(Http404):  # past the window: nothing to offer
            extra["undo"] = deleted_conversation(request.user, undo)
    return _page(request, extra=extra)


@login_required
@require_GET
def conversation_search(request: AuthedHttpRequest) -> HttpResponse:
    """The sidebar's list for ``?q=`` (title or any message containing it), as an htmx partial."""
    query = request.GET.get("q", "")
    current = request.GET.get("current", "")
    return render(
        request,
        "chat/conversation.html#conversation-list",
        {
            "conversations": conversations_for(request.user, query),
            "query": query,
            "current_id": current,
        },
    )


@login_required
@require_POST
def conversation_pin(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    services.conversation_pin(conversation=conversation, pinned=not conversation.pinned)
    if request.htmx:  # the list in its new order, and the button's new label out of band
        context = {
            "conversations": conversations_for(request.user),
            "conversation": conversation,
            "oob": True,
        }
        return HttpResponse(
            render_to_string("chat/conversation.html#conversation-list", context, request)
            + render_to_string("chat/conversation.html#pin-button", context, request)
        )
    return redirect("chat-conversation", conversation_id=conversation.pk)


@login_required
@require_POST
def conversation_restore(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = deleted_conversation(request.user, conversation_id)
    services.conversation_restore(conversation=conversation)
    url = reverse("chat-conversation", kwargs={"conversation_id": conversation.pk})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_GET
def conversation_export(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    """``?format=md`` (Markdown, the default) or ``?format=json`` (importable), as a download."""
    conversation = access_conversation(request.user, conversation_id)
    kind = request.GET.get("format", "md")
    name = slugify(conversation.display_title)[:50] or "conversation"
    if kind == "json":
        body = json.dumps(exports.conversation_as_json(conversation), indent=2, ensure_ascii=False)
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        extension = "json"
    elif kind == "md":
        body = exports.conversation_as_markdown(conversation)
        response = HttpResponse(body, content_type="text/markdown; charset=utf-8")
        extension = "md"
    else:
        return HttpResponse("Ask for format=md or format=json.", status=400)
    response["Content-Disposition"] = f'attachment; filename="{name}.{extension}"'
    return response


@login_required
@require_POST
def conversation_import(request: AuthedHttpRequest) -> HttpResponse:
    """A JSON export, uploaded, becomes a new conversation; a refusal says what to fix."""
    upload = request.FILES.get("file")
    try:
        if upload is None:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER, "Choose a JSON export to import.", param="file"
            )
        if upload.size and upload.size > exports.MAX_IMPORT_BYTES:
            raise ServiceError(
                ErrorCode.INVALID_PARAMETER,
                f"The file has {upload.size} bytes; the limit is {exports.MAX_IMPORT_BYTES}.",
                param="file",
            )
        conversation = exports.conversation_import(owner=request.user, raw=upload.read())
    except ServiceError as exc:
        if request.htmx:
            return render(
                request,
                "chat/conversation.html#import-form",
                {"import_error": exc.message},
                status=400,
            )
        return _page(request, status=400, extra={"import_error": exc.message})
    url = reverse("chat-conversation", kwargs={"conversation_id": conversation.pk})
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_POST
def conversation_new(request: AuthedHttpRequest) -> HttpResponse:
    try:
        conversation = services.conversation_create(owner=request.user)
    except ServiceError as exc:
        return HttpResponse(exc.message, status=409)
    return redirect("chat-conversation", conversation_id=conversation.pk)


@login_required
@require_GET
def conversation_detail(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    return _page(request, access_conversation(request.user, conversation_id))


@login_required
@require_POST
def conversation_rename(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    form = RenameForm(request.POST)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=400)
    services.conversation_rename(conversation=conversation, title=form.cleaned_data["title"])
    if request.htmx:
        return render(
            request,
            "chat/conversation.html#conversation-item",
            {"item": conversation, "conversation": conversation},
        )
    return redirect("chat-conversation", conversation_id=conversation.pk)


@login_required
@require_POST
def conversation_delete(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    services.conversation_delete(conversation=conversation)
    url = f"{reverse('chat-index')}?undo={conversation.pk}"
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@login_required
@require_POST
def conversation_settings(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    form = SettingsForm(request.POST)
    model: LanguageModel | None = None
    if form.is_valid():
        try:
            model = access_model(
                request.user, form.cleaned_data["model"], task=LanguageModel.Task.CHAT
            )
        except Http404:
            form.add_error(
                "model", f"Unknown model {form.cleaned_data['model']!r}; pick one from the list."
            )
    if model is None or not form.is_valid():
        context = {"conversation": conversation, **_settings_context(request, conversation, form)}
        return render(request, "chat/conversation.html#settings", context, status=400)
    services.conversation_update_settings(
        conversation=conversation,
        model=model,
        system_prompt=form.cleaned_data["system_prompt"],
        temperature=form.cleaned_data["temperature"],
        top_p=form.cleaned_data["top_p"],
        max_tokens=form.cleaned_data["max_tokens"],
    )
    return _settings_partial(request, conversation, saved="Saved.")


def _settings_partial(
    request: AuthedHttpRequest,
    conversation: Conversation,
    *,
    saved: str = "",
    preset_error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "conversation": conversation,
        **_settings_context(request, conversation, None),
        "saved": saved,
        "preset_error": preset_error,
    }
    return render(request, "chat/conversation.html#settings", context, status=status)


@login_required
@require_POST
def preset_apply(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    preset = access_preset(request.user, request.POST.get("preset", ""))
    services.preset_apply(conversation=conversation, preset=preset)
    return _settings_partial(request, conversation, saved=f"Applied {preset.name}.")


@login_required
@require_POST
def preset_save(request: AuthedHttpRequest, conversation_id: str) -> HttpResponse:
    conversation = access_conversation(request.user, conversation_id)
    try:
        preset = services.preset_save(
            owner=request.user, conversation=conversation, name=request.POST.get("name", "")
        )
    except ServiceError as exc:
        return _settings_partial(request, conversation, preset_error=exc.message, status=400)
    return _settings_partial(request, conversation, saved=f"Saved as preset {preset.name}.")


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
        form.add_error("model", "Pick a model from the list.")
        return render(request, template, context, status=400)
    try:
        context["generation"] = services.completion_start(
            owner=request.user,
            model=model,
            prompt=form.cleaned_data["prompt"],
            params=form.cleaned_data["params"],
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
            params=form.cleaned_data["params"],
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
    from asgiref.sync import sync_to_async

    from apps.inference.models import EmbeddingBatch
    from apps.inference.services import embedding_create
    from apps.inference.streaming import embedding_group, wait_finished

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
        with transaction.atomic():
            return embedding_create(
                user=user,
                model_version=active_version(model),
                inputs=[form.cleaned_data["text"]],
                kind=EmbeddingBatch.Kind.CLASSIFICATION,
            )

    try:
        batch = await sync_to_async(start)()
    except Http404:
        context["error"] = "That classifier is not available to you."
        return await sync_to_async(render)(request, template, context, status=404)
    batch = await wait_finished(
        embedding_group(batch.pk), lambda: EmbeddingBatch.objects.get(pk=batch.pk)
    )
    if batch.status == EmbeddingBatch.Status.FAILED:
        context["error"] = batch.error_message
        return await sync_to_async(render)(request, template, context, status=400)
    result = (batch.results or [{}])[0]
    context["label"] = result["label"]
    context["scores"] = sorted(result["scores"].items(), key=lambda item: -item[1])
    return await sync_to_async(render)(request, template, context)
