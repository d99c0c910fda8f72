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
    peak = max((d.total for d in days), default=0) or 1
    bars = []
    for i, day in enumerate(days):
        height = round(day.total / peak * 120)
        bars.append({"day": day, "x": i * 20, "y": 130 - height, "height": height})
    context = {
        "days": days,
        "bars": bars,
        "peak": peak,
        "total": sum(d.total for d in days),
        "by_model": usage_totals(request.user, group="model__slug"),
        "by_key": usage_totals(request.user, group="api_key__name"),
        "by_source": usage_totals(request.user, group="source"),
        "quota": request.user.daily_token_quota,
        "today": days[-1].total,
    }
    return render(request, "inference/usage.html", context)
