from django.urls import path

from . import tool_views, views

urlpatterns = [
    path("", views.chat_index, name="chat-index"),
    path("new/", views.conversation_new, name="chat-conversation-new"),
    path("compare/", tool_views.compare, name="chat-compare"),
    path("classify/", tool_views.classify, name="chat-classify"),
    path("complete/", tool_views.complete, name="chat-complete"),
    path("search/", views.conversation_search, name="chat-search"),
    path("documents/", views.document_attach, name="chat-document-attach"),
    path("documents/<uuid:document_id>/", views.document_file, name="chat-document"),
    path("import/", views.conversation_import, name="chat-conversation-import"),
    path("<uuid:conversation_id>/", views.conversation_detail, name="chat-conversation"),
    path(
        "<uuid:conversation_id>/rename/", views.conversation_rename, name="chat-conversation-rename"
    ),
    path(
        "<uuid:conversation_id>/delete/", views.conversation_delete, name="chat-conversation-delete"
    ),
    path("<uuid:conversation_id>/pin/", views.conversation_pin, name="chat-conversation-pin"),
    path(
        "<uuid:conversation_id>/restore/",
        views.conversation_restore,
        name="chat-conversation-restore",
    ),
    path(
        "<uuid:conversation_id>/export/",
        views.conversation_export,
        name="chat-conversation-export",
    ),
    path("<uuid:conversation_id>/presets/apply/", views.preset_apply, name="chat-preset-apply"),
    path("<uuid:conversation_id>/presets/save/", views.preset_save, name="chat-preset-save"),
    path(
        "<uuid:conversation_id>/settings/",
        views.conversation_settings,
        name="chat-conversation-settings",
    ),
]
