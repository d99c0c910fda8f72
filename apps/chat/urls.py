from django.urls import path

from . import views

urlpatterns = [
    path("", views.chat_index, name="chat-index"),
    path("new/", views.conversation_new, name="chat-conversation-new"),
    path("compare/", views.compare, name="chat-compare"),
    path("classify/", views.classify, name="chat-classify"),
    path("<uuid:conversation_id>/", views.conversation_detail, name="chat-conversation"),
    path(
        "<uuid:conversation_id>/rename/", views.conversation_rename, name="chat-conversation-rename"
    ),
    path(
        "<uuid:conversation_id>/delete/", views.conversation_delete, name="chat-conversation-delete"
    ),
    path(
        "<uuid:conversation_id>/settings/",
        views.conversation_settings,
        name="chat-conversation-settings",
    ),
]
