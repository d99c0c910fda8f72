from django import template
from django.utils.safestring import SafeString, mark_safe

from apps.chat.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return mark_safe(render_markdown(text or ""))  # noqa: S308 - nh3 has sanitised it
