"""The eval sets pages: the list with the upload form and the demo, and one set's items."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from apps.core.http import AuthedHttpRequest
from apps.core.uploads import too_large

from . import services
from .forms import EvalSetUploadForm
from .items import MAX_BYTES, EvalSetInvalid
from .selectors import access_eval_set, eval_sets_for


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


@login_required
@require_GET
def eval_set_detail(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    eval_set = access_eval_set(request.user, eval_set_id)
    items = list(eval_set.items.all())
    return render(request, "evals/set.html", {"eval_set": eval_set, "items": items})


@login_required
@require_POST
def eval_set_delete(request: AuthedHttpRequest, eval_set_id: str) -> HttpResponse:
    services.eval_set_delete(eval_set=access_eval_set(request.user, eval_set_id))
    return redirect("evals-index")
