"""Model output as sanitised HTML: Markdown in, a fixed allow-list of tags out.

No scripts, no event handlers, no styles, and no images at all (a remote image would tell a third
party that the page was read). Links keep only http, https and mailto targets.
"""

from __future__ import annotations

import markdown
import nh3

ALLOWED_TAGS = {
    "p",
    "br",
    "hr",
    "strong",
    "em",
    "del",
    "code",
    "pre",
    "blockquote",
    "ul",
    "ol",
    "li",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "a",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "code": {"class"}, "th": {"align"}, "td": {"align"}}


def _only_language_classes(tag: str, attribute: str, value: str) -> str | None:
    # Fenced code gets "language-x"; any other class could restyle the page or match its scripts.
    if attribute == "class":
        return value if value.startswith("language-") and " " not in value else None
    return value


def render_markdown(text: str) -> str:
    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"])
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_only_language_classes,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
