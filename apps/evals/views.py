"""The eval sets pages: the list with the upload form and the demo, and one set's items."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.catalog.models import LanguageModel
from apps.catalog.selectors import DEFAULT_CHAT_MODEL, access_model, chat_models_for
from apps.chat.selectors import access_answer, prompt_messages
from apps.core.errors import ServiceError
from apps.core.http import AuthedHttpRequest
from apps.core.uploads import too_large

from . import services
from .comparisons import compare
from .forms import EvalRunForm, EvalSetUploadForm
from .graders import grader_name
from .items import MAX_BYTES, EvalSetInvalid
from .models import EvalSet
from .selectors import access_eval_run, access_eval_set, eval_sets_for, run_results, runs_of


def _index(
    request: AuthedHttpRequest,
    *,
    form: EvalSetUploadForm | None = None,
    refusal: EvalSetInvalid | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "eval_sets": eval_sets_for(request.user),
        "form": form or EvalSetUploadForm(),
        "refusal": refusal,
    }
    return render(request, "evals/index.html", context, status=status)


@login_required
@require_GET
def index(request: AuthedHttpRequest) -> HttpResponse:
    return _index(request)


@login_required
@require_POST
def upload(request: AuthedHttpRequest) -> HttpResponse:
    """A JSONL file becomes an eval set; a refusal lists the bad lines and keeps nothing."""
    form = EvalSetUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        return _index(request, form=form, status=400)
    file = form.cleaned_data["file"]
    try:
        refused = too_large(file, MAX_BYTES)
        if refused:
            raise EvalSetInvalid(refused)
        eval_set = services.eval_set_create(
            owner=request.user,
            name=form.cleaned_data["name"],
            filename=file.name or "",
            data=file.read(),
        )
    except EvalSetInvalid as refusal:
        return _index(request, form=form, refusal=refusal, status=400)
    return redirect("evals-set", eval_set_id=eval_set.pk)


@login_required
@require_POST
def demo(request: AuthedHttpRequest) -> HttpResponse:
    eval_set = services.eval_set_add_demo(owner=request.user)
    return redirect("evals-set", eval_set_id=eval_set.pk)


@require_GET
def demo_file(request: AuthedHttpRequest) -> FileResponse:
    return FileResponse(
        open(services.DEMO, "rb"),  # noqa: SIM115 - FileResponse closes it
        content_type="application/jsonl",
        filename=services.DEMO.name,
        as_attachment=True,
    )


def _run_form(request: AuthedHttpRequest, data: object = None) -> EvalRunForm:
    models = [(m.slug, m.display_name) for m in chat_models_for(request.user)]
    return EvalRunForm(data, models=models, initial={"model": DEFAULT_CHAT_MODEL})  # type: ignore[arg-type]


def _set_page(
    request: AuthedHttpRequest,
    eval_set: EvalSet,
    *,
    form: EvalRunForm | None = None,
    error: str = "",
    status: int = 200,
) -> HttpResponse:
    context = {
        "eval_set": eval_set,
        "items": list(eval_set.items.all()),
        "runs": runs_of(eval_set),
        "form": form or _run_form(request),
        "error": error,
    }
    return render(request, "evals/set.html", context, status=status)


@login_required
@require_GET
def eval_set_detail(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    return _set_page(request, access_eval_set(request.user, eval_set_id))


@login_required
@require_POST
def eval_run_create(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    """Run the set on a model with the chosen graders; a refusal shows the form again."""
    eval_set = access_eval_set(request.user, eval_set_id)
    form = _run_form(request, request.POST)
    if not form.is_valid():
        return _set_page(request, eval_set, form=form, status=400)
    try:
        model = access_model(request.user, form.cleaned_data["model"], task=LanguageModel.Task.CHAT)
        run = services.eval_run_start(
            owner=request.user,
            eval_set=eval_set,
            model=model,
            graders=form.graders(),
            settings={
                "temperature": form.cleaned_data["temperature"],
                "max_tokens": form.cleaned_data["max_tokens"],
            },
        )
    except Http404:
        return _set_page(request, eval_set, form=form, status=400)
    except ServiceError as refused:
        return _set_page(request, eval_set, form=form, error=refused.message, status=400)
    return redirect("evals-run", run_id=run.pk)


@login_required
@require_GET
def eval_run_detail(request: AuthedHttpRequest, run_id: str) -> HttpResponse:
    """A run: its progress while it runs (the page refreshes itself), its aggregates, and
    every item's answer and grades."""
    run = access_eval_run(request.user, run_id)
    results = run_results(run)
    names = [grader_name(config) for config in run.graders]
    rows = [(result, list(zip(names, result.grades or [], strict=False))) for result in results]
    context = {"run": run, "rows": rows, "names": names}
    return render(request, "evals/run.html", context)


@login_required
@require_POST
def eval_run_cancel(request: AuthedHttpRequest, run_id: str) -> HttpResponse:
    run = access_eval_run(request.user, run_id)
    services.eval_run_cancel(run=run)
    return redirect("evals-run", run_id=run.pk)


@login_required
@require_POST
def eval_set_delete(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    services.eval_set_delete(eval_set=access_eval_set(request.user, eval_set_id))
    return redirect("evals-index")


@login_required
@require_GET
def eval_run_compare(request: AuthedHttpRequest, run_id: str, other_id: str) -> HttpResponse:
    """Run ``other_id`` (B) against ``run_id`` (A), both the caller's and of the same set: per
    grader the difference with its interval and McNemar's p-value, and the items that flipped
    either way with both answers."""
    a = access_eval_run(request.user, run_id)
    b = access_eval_run(request.user, other_id)
    if a.eval_set_id != b.eval_set_id:
        raise Http404("These runs are of different eval sets")
    graders = compare(a, b, run_results(a), run_results(b))
    return render(request, "evals/compare.html", {"a": a, "b": b, "graders": graders})


@login_required
@require_GET
def eval_run_compare_pick(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    """The set page's compare form (``a`` and ``b``, two of its runs)."""
    eval_set = access_eval_set(request.user, eval_set_id)
    a, b = request.GET.get("a", ""), request.GET.get("b", "")
    return (
        redirect(
            "evals-compare",
            run_id=access_eval_run(request.user, a).pk,
            other_id=access_eval_run(request.user, b).pk,
        )
        if a and b
        else redirect("evals-set", eval_set_id=eval_set.pk)
    )


def _add_form(
    request: AuthedHttpRequest, answer_id: str, *, ideal: str, error: str = "", status: int = 200
) -> HttpResponse:
    context = {
        "answer_id": answer_id,
        "eval_sets": eval_sets_for(request.user),
        "ideal": ideal,
        "error": error,
    }
    return render(request, "evals/add_form.html", context, status=status)


@login_required
@require_GET
def add_from_chat(request: AuthedHttpRequest) -> HttpResponse:
    """The chat's "Add to eval set" (an htmx partial under the answer): a set, or a new one,
    and the ideal answer, the model's own to start with."""
    answer = access_answer(request.user, request.GET.get("message", ""))
    return _add_form(request, str(answer.pk), ideal=answer.text)


@login_required
@require_POST
def add_from_chat_save(request: AuthedHttpRequest) -> HttpResponse:
    """The conversation up to the answer becomes an item's input, the ideal (as corrected)
    its answer."""
    answer = access_answer(request.user, request.POST.get("message", ""))
    chosen = request.POST.get("eval_set", "new")
    ideal = request.POST.get("ideal", "")
    try:
        item = services.eval_item_add(
            owner=request.user,
            eval_set=None if chosen == "new" else access_eval_set(request.user, chosen),
            new_name=request.POST.get("name", ""),
            messages=prompt_messages(answer.conversation, before=answer),
            ideal=ideal,
        )
    except EvalSetInvalid as refusal:
        return _add_form(request, str(answer.pk), ideal=ideal, error=refusal.summary, status=400)
    return render(request, "evals/add_done.html", {"item": item})
