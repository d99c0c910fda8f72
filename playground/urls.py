from django.contrib import admin
from django.urls import include, path
from django.views.i18n import JavaScriptCatalog

from apps.api import site_views as api_site_views
from apps.api import views as api_views
from apps.chat import views as chat_views

from . import ops

urlpatterns = [
    path("", chat_views.home, name="home"),
    path("admin/", admin.site.urls),
    path("accounts/", include("apps.accounts.urls")),
    path("accounts/", include("apps.inference.urls")),
    path("chat/", include("apps.chat.urls")),
    path("finetuning/", include("apps.finetuning.urls")),
    path("evals/", include("apps.evals.urls")),
    path("v1/", include("apps.api.urls")),
    path("docs/api/", api_views.api_docs, name="api-docs"),
    path("batches/", api_site_views.batches_page, name="api-batches-page"),
    path(
        "batches/files/<str:file_id>/",
        api_site_views.batch_file_download,
        name="api-batch-file",
    ),
    # The scripts' translated strings (gettext and friends, from locale/*/djangojs.po).
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript-catalog"),
    path("healthz", ops.healthz, name="ops-healthz"),
    path("readyz", ops.readyz, name="ops-readyz"),
    path("metrics", ops.metrics, name="ops-metrics"),
]
