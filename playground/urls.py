from django.contrib import admin
from django.urls import include, path

from apps.api import views as api_views
from apps.chat import views as chat_views
from apps.core import views as core_views

urlpatterns = [
    path("", chat_views.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.accounts.urls")),
    path("chat/", include("apps.chat.urls")),
    path("finetuning/", include("apps.finetuning.urls")),
    path("v1/", include("apps.api.urls")),
    path("docs/api/", api_views.api_docs, name="api-docs"),
    path("healthz", core_views.healthz, name="core-healthz"),
    path("readyz", core_views.readyz, name="core-readyz"),
    path("metrics", core_views.metrics, name="core-metrics"),
]
