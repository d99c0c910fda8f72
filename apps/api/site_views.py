"""The site's pages for what programs do through the API: a user's batches with their progress,
and their files to download (signed in, never with a key)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.core.http import AuthedHttpRequest

from .batches import batch_object
from .selectors import access_api_file, batches_for


@login_required
@require_GET
def batches_page(request: AuthedHttpRequest) -> HttpResponse:
    """The account's batches, newest first, with their progress; it refreshes itself while one
    has not ended."""
    batches = []
    for batch in batches_for(request.user):
        shown = batch_object(batch)
        counts = shown["request_counts"]
        done = counts["completed"] + counts["failed"]
        shown["done"] = done
        shown["percent"] = round(100 * done / counts["total"]) if counts["total"] else 0
        shown["ended"] = batch.is_finished
        shown["created"] = batch.created_at
        batches.append(shown)
    template = "api/batches.html#batch-list" if request.htmx else "api/batches.html"
    live = any(not b["ended"] for b in batches)
    return render(request, template, {"batches": batches, "live": live})


@login_required
@require_GET
def batch_file_download(request: AuthedHttpRequest, file_id: str) -> HttpResponse:
    """One of the account's Batch API files (an input, an output or an error file)."""
    api_file = access_api_file(request.user, file_id)
    response = HttpResponse(api_file.content, content_type="application/jsonl; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{api_file.filename}"'
    return response
