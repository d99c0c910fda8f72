from django.urls import path

from . import batch_views, finetuning_views, views
from .decorators import by_method as _by_method

urlpatterns = [
    path("models", views.models_list, name="api-models"),
    path(
        "models/<str:model_id>",
        _by_method(GET=views.model_detail, DELETE=views.model_delete),
        name="api-model",
    ),
    path("chat/completions", views.chat_completions, name="api-chat-completions"),
    path("completions", views.completions, name="api-completions"),
    path("responses", views.responses_create, name="api-responses"),
    path(
        "responses/<str:response_id>",
        _by_method(GET=views.response_detail, DELETE=views.response_delete_view),
        name="api-response",
    ),
    path(
        "responses/<str:response_id>/cancel",
        views.response_cancel_view,
        name="api-response-cancel",
    ),
    path(
        "responses/<str:response_id>/input_items",
        views.response_input_items,
        name="api-response-input-items",
    ),
    path("embeddings", views.embeddings, name="api-embeddings"),
    path("classifications", views.classifications, name="api-classifications"),
    path(
        "files",
        _by_method(GET=finetuning_views.files_list, POST=finetuning_views.files_create),
        name="api-files",
    ),
    path(
        "files/<str:file_id>",
        _by_method(GET=finetuning_views.file_detail, DELETE=finetuning_views.file_delete),
        name="api-file",
    ),
    path("files/<str:file_id>/content", finetuning_views.file_content, name="api-file-content"),
    path(
        "batches",
        _by_method(GET=batch_views.batches_list, POST=batch_views.batches_create),
        name="api-batches",
    ),
    path("batches/<str:batch_id>", batch_views.batch_detail, name="api-batch"),
    path("batches/<str:batch_id>/cancel", batch_views.batch_cancel_view, name="api-batch-cancel"),
    path(
        "fine_tuning/jobs",
        _by_method(GET=finetuning_views.jobs_list, POST=finetuning_views.jobs_create),
        name="api-finetuning-jobs",
    ),
    path("fine_tuning/jobs/<str:job_id>", finetuning_views.job_detail, name="api-finetuning-job"),
    path(
        "fine_tuning/jobs/<str:job_id>/events",
        finetuning_views.job_events_list,
        name="api-finetuning-job-events",
    ),
    path(
        "fine_tuning/jobs/<str:job_id>/cancel",
        finetuning_views.job_cancel,
        name="api-finetuning-job-cancel",
    ),
    path("openapi.json", views.openapi_json, name="api-openapi"),
]
