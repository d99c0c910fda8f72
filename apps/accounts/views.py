from django.conf import settings
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods, require_POST

from apps.core.http import AuthedHttpRequest

from .forms import ApiKeyForm, SignUpForm
from .selectors import access_api_key, api_keys_for
from .services import api_key_issue, api_key_revoke, user_language_set, user_sign_up


@require_POST
def language_set(request: HttpRequest) -> HttpResponse:
    """The top bar's language switch: ``language`` (one of LANGUAGES) is kept in the language
    cookie, and on the account when one is signed in (so it follows them to another browser);
    then back to ``next``, a page of this site. An unknown language changes nothing."""
    language = request.POST.get("language", "")
    following = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        following, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        following = "/"
    response = HttpResponseRedirect(following)
    if language not in dict(settings.LANGUAGES):
        return response
    if request.user.is_authenticated:
        user_language_set(user=request.user, language=language)  # type: ignore[arg-type]
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        language,
        max_age=365 * 24 * 3600,
        samesite="Lax",
        secure=settings.SESSION_COOKIE_SECURE,
    )
    return response


@require_http_methods(["GET", "POST"])
def signup(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated:
        return redirect("chat-index")
    form = SignUpForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = user_sign_up(
            username=form.cleaned_data["username"], password=form.cleaned_data["password1"]
        )
        login(request, user)
        return redirect("chat-index")
    return render(
        request, "accounts/signup.html", {"form": form}, status=400 if form.errors else 200
    )


def _keys_context(
    request: AuthedHttpRequest, form: ApiKeyForm, **extra: object
) -> dict[str, object]:
    return {"keys": api_keys_for(request.user), "form": form, **extra}


@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: AuthedHttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "accounts/keys.html", _keys_context(request, ApiKeyForm()))
    form = ApiKeyForm(request.POST)
    template = "accounts/keys.html#keys-panel" if request.htmx else "accounts/keys.html"
    if not form.is_valid():
        return render(request, template, _keys_context(request, form), status=400)
    api_key, key = api_key_issue(
        user=request.user,
        name=form.cleaned_data["name"],
        scopes=form.cleaned_data["scopes"],
        expires_at=form.expires_at(),
    )
    context = _keys_context(request, ApiKeyForm(), new_key=key, new_key_row=api_key)
    return render(request, template, context, status=201)


@login_required
@require_POST
def api_key_revoke_view(request: AuthedHttpRequest, api_key_id: int) -> HttpResponse:
    api_key = api_key_revoke(api_key=access_api_key(request.user, api_key_id))
    if request.htmx:
        return render(request, "accounts/keys.html#key-row", {"key": api_key})
    return redirect("accounts-keys")
