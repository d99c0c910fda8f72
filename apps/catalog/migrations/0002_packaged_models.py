from django.db import migrations

from apps.catalog.packaged import PACKAGED, register_packaged_models


def add(apps, schema_editor):
    register_packaged_models(apps.get_model("catalog", "LanguageModel"),
                             apps.get_model("catalog", "ModelVersion"))


def remove(apps, schema_editor):
    apps.get_model("catalog", "LanguageModel").objects.filter(
        slug__in=[item["slug"] for item in PACKAGED]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]
    operations = [migrations.RunPython(add, remove)]
