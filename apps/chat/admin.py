from django.contrib import admin
from django.http import HttpRequest

from apps.audit.admin import PrivateContentAdmin

from .models import Conversation, Message


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("role", "content", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Conversation)
class ConversationAdmin(PrivateContentAdmin):
    """Staff see that conversations exist, not what was said in them, unless
    ADMIN_CONVERSATION_ACCESS is on (and then each read is in the audit log)."""

    list_display = ("id", "owner", "model", "created_at", "updated_at")
    fields = ("owner", "model", "created_at", "updated_at")
    readonly_fields = fields
    private_fields = ("title", "system_prompt")
    private_inlines = [MessageInline]
    owner_field = "owner"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from users' requests, never from the admin
