import json

from django import template
from django.utils.safestring import SafeString, mark_safe

from apps.chat.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return mark_safe(render_markdown(text or ""))  # noqa: S308 - nh3 has sanitised it


@register.filter(name="pretty_json")
def pretty_json(text: str) -> str:
    """An answer held to a JSON schema, indented for reading (as it came when it is not JSON:
    an answer cut by max_tokens)."""
    try:
        return json.dumps(json.loads(text or ""), indent=2, ensure_ascii=False)
    except ValueError:
        return text or ""
