from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from apps.core.http import AuthedHttpRequest

from .usage import usage_by_day, usage_totals


@login_required
@require_GET
def usage(request: AuthedHttpRequest) -> HttpResponse:
    """The account's usage: the last 30 days by day, and totals by model, key and source."""
    days = usage_by_day(request.user, days=30)
    chart_days = [
        {
            "day": d.day.isoformat(),
            "prompt_tokens": d.prompt_tokens,
            "completion_tokens": d.completion_tokens,
            "total": d.total,
        }
        for d in days
    ]
    context = {
        "days": days,
        "chart_days": chart_days,
        "peak": max((d.total for d in days), default=0),
        "total": sum(d.total for d in days),
        "by_model": usage_totals(request.user, group="model__slug"),
        "by_key": usage_totals(request.user, group="api_key__name"),
        "by_source": usage_totals(request.user, group="source"),
        "quota": request.user.daily_token_quota,
        "today": days[-1].total,
    }
    return render(request, "inference/usage.html", context)
