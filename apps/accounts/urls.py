from django.contrib.auth import views as auth_views
from django.urls import path

from . import views

urlpatterns = [
    path("signup/", views.signup, name="accounts-signup"),
    path("language/", views.language_set, name="accounts-language"),
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="accounts/login.html", redirect_authenticated_user=True
        ),
        name="accounts-login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="accounts-logout"),
    path("keys/", views.api_keys, name="accounts-keys"),
    path("keys/<int:api_key_id>/revoke/", views.api_key_revoke_view, name="accounts-key-revoke"),
]
