from django.urls import path

from . import views

urlpatterns = [
    path("models", views.models_list, name="api-models"),
    path("models/<str:model_id>", views.model_detail, name="api-model"),
    path("chat/completions", views.chat_completions, name="api-chat-completions"),
    path("completions", views.completions, name="api-completions"),
    path("embeddings", views.embeddings, name="api-embeddings"),
    path("openapi.json", views.openapi_json, name="api-openapi"),
]
