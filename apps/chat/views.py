from __future__ import annotations

import contextlib
import json

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from apps.catalog.models import LanguageModel
from apps.catalog.selectors import (
    DEFAULT_CHAT_MODEL,
    access_model,
    active_version,
    chat_models_for,
)
from apps.core.documents import ACCEPT
from apps.core.errors import ErrorCode, ServiceError, quoted
from apps.core.http import AuthedHttpRequest
from apps.core.uploads import too_large
from apps.inference.protocol import SamplingParams

from . import exports, services
from .forms import RenameForm, SettingsForm
from .models import Conversation
from .selectors import (
    access_conversation,
    access_document,
    access_preset,
    conversation_messages,
    conversations_for,
    deleted_conversation,
    presets_for,
    unsent_documents,
)

DOCUMENT_CHIP = "chat/conversation.html#document-chip"


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
        "document_accept": ACCEPT,
        **_settings_context(request, conversation, form),
        **(extra or {}),
    }
    if conversation is not None:
        context["messages_list"] = conversation_messages(conversation)
    else:
        context["default_model"] = DEFAULT_CHAT_MODEL
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
            "json_schema": (
                json.dumps(conversation.json_schema, indent=2)
                if conversation.json_schema is not None
                else ""
            ),
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
        return HttpResponse(_("Ask for format=md or format=json."), status=400)
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
                ErrorCode.INVALID_PARAMETER, _("Choose a JSON export to import."), param="file"
            )
        refusal = too_large(upload, exports.MAX_IMPORT_BYTES)
        if refusal:
            raise ServiceError(ErrorCode.INVALID_PARAMETER, refusal, param="file")
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
    """The arrival composer's first message (``text``, or a starter prompt's ``starter``, on
    ``model``) makes the conversation and starts its answer; the page it opens follows the
    answer as it streams. A refused message shows the composer again with the text kept.
    Without ``text`` (an older client), an empty conversation is made as before."""
    if "text" not in request.POST and "starter" not in request.POST:
        try:
            conversation = services.conversation_create(owner=request.user)
        except ServiceError as exc:
            return HttpResponse(exc.message, status=409)
        return redirect("chat-conversation", conversation_id=conversation.pk)
    text = request.POST.get("starter") or request.POST.get("text", "")
    slug = request.POST.get("model", "")
    documents = request.POST.getlist("documents")
    try:
        model = access_model(request.user, slug, task=LanguageModel.Task.CHAT) if slug else None
    except Http404:
        refusal = _("There is no chat model %(model)s for you; pick one from the list.") % {
            "model": quoted(slug)
        }
        return _arrival_refused(request, text, slug, documents, refusal, status=400)
    try:
        conversation, _answer = services.conversation_start(
            owner=request.user, text=text, model=model, documents=documents
        )
    except ServiceError as exc:
        status = {ErrorCode.QUOTA_EXCEEDED: 429, ErrorCode.MODEL_NOT_FOUND: 409}.get(exc.code, 400)
        return _arrival_refused(request, text, slug, documents, exc.message, status=status)
    return redirect("chat-conversation", conversation_id=conversation.pk)


def _arrival_refused(
    request: AuthedHttpRequest,
    text: str,
    slug: str,
    documents: list[str],
    message: str,
    *,
    status: int,
) -> HttpResponse:
    """The chat page's arrival composer again, with what was typed and attached, and why it
    was refused."""
    extra: dict[str, object] = {
        "arrival_error": message,
        "arrival_text": text,
        "arrival_model": slug,
        "arrival_documents": unsent_documents(request.user, documents),
    }
    return _page(request, status=status, extra=extra)


@login_required
@require_POST
def document_attach(request: AuthedHttpRequest) -> JsonResponse:
    """A document for the next message: ``file`` (multipart), for the open ``conversation``'s
    model and answer length, or (the arrival composer) for ``model``'s. Answers
    ``{"id", "html"}`` (the chip the composer shows, which names the document to send with the
    message) or ``{"error"}`` with a 400 (413 for a file over CHAT_MAX_DOCUMENT_BYTES)."""
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"error": _("Choose a file to attach.")}, status=400)
    refusal = too_large(upload, settings.CHAT_MAX_DOCUMENT_BYTES)
    if refusal:
        return JsonResponse({"error": f"{quoted(upload.name or '')}: {refusal}"}, status=413)
    if request.POST.get("conversation"):
        conversation = access_conversation(request.user, request.POST["conversation"])
        model, max_tokens = conversation.model, conversation.max_tokens
    else:
        slug = request.POST.get("model") or DEFAULT_CHAT_MODEL
        try:
            model = access_model(request.user, slug, task=LanguageModel.Task.CHAT)
        except Http404:
            refusal = _("There is no chat model %(model)s for you; pick one from the list.") % {
                "model": quoted(slug)
            }
            return JsonResponse({"error": refusal}, status=400)
        defaults = active_version(model).default_params
        max_tokens = int(defaults.get("max_tokens", SamplingParams().max_tokens))
    try:
        document = services.document_attach(
            owner=request.user,
            model=model,
            filename=upload.name or "",
            data=upload.read(),
            max_tokens=max_tokens,
        )
    except ServiceError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    html = render_to_string(DOCUMENT_CHIP, {"document": document, "removable": True})
    return JsonResponse({"id": str(document.pk), "html": html})


@login_required
@require_GET
def document_file(request: AuthedHttpRequest, document_id: str) -> FileResponse:
    """The attached file, to its owner only, always as a download (an HTML document opened in
    the page would run in the site's origin)."""
    document = access_document(request.user, document_id)
    return FileResponse(
        document.file.open("rb"),
        as_attachment=True,
        filename=document.name,
        content_type="application/octet-stream",
    )


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
                "model",
                _("Unknown model %(model)s; pick one from the list.")
                % {"model": quoted(form.cleaned_data["model"])},
            )
    if model is None or not form.is_valid():
        context = {"conversation": conversation, **_settings_context(request, conversation, form)}
        return render(request, "chat/conversation.html#settings", context, status=400)
    services.conversation_update_settings(
        conversation=conversation,
        model=model,
        system_prompt=form.cleaned_data["system_prompt"],
        json_schema=form.cleaned_data["json_schema"],
        **form.cleaned_data["settings"],
    )
    return _settings_partial(request, conversation, saved=_("Saved."))


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
    return _settings_partial(
        request, conversation, saved=_("Applied %(name)s.") % {"name": preset.name}
    )


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
    return _settings_partial(
        request, conversation, saved=_("Saved as preset %(name)s.") % {"name": preset.name}
    )
