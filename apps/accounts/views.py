from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from .forms import SignUpForm
from .services import user_sign_up


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
