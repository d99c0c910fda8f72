"""The presets every account gets: a system prompt and parameters for common tasks."""

from __future__ import annotations

from typing import Any

SHIPPED: list[dict[str, Any]] = [
    {
        "name": "Summarise a text",
        "system_prompt": "Summarise the text the user sends in three to five short bullet points. "
        "Keep names, numbers and dates exact; add nothing that is not in the text.",
        "temperature": 0.2,
        "top_p": 1.0,
        "max_tokens": 300,
    },
    {
        "name": "Explain code",
        "system_prompt": "You explain code to a developer. Say what the code does, step by step, "
        "then point out bugs or risky parts. Quote the lines you talk about in code blocks.",
        "temperature": 0.2,
        "top_p": 1.0,
        "max_tokens": 600,
    },
    {
        "name": "Translate",
        "system_prompt": "Translate the user's text. If they name a language, translate into it; "
        "otherwise translate English into French and any other language into English. Reply with "
        "the translation only.",
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 400,
    },
]


def register_shipped_presets(preset_model: Any) -> None:
    """Create or update the shipped presets (a migration passes its historical model)."""
    for preset in SHIPPED:
        preset_model.objects.update_or_create(owner=None, name=preset["name"], defaults=preset)
