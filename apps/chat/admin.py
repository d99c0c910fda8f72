from django.contrib import admin

from .models import Conversation


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    # Staff see that conversations exist, not what was said in them.
    list_display = ("id", "owner", "model", "created_at", "updated_at")
    fields = ("owner", "model", "created_at", "updated_at")
    readonly_fields = fields
