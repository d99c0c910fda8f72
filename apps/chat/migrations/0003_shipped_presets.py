from django.db import migrations

from apps.chat.presets import SHIPPED, register_shipped_presets


def add(apps, schema_editor):
    register_shipped_presets(apps.get_model("chat", "Preset"))


def remove(apps, schema_editor):
    apps.get_model("chat", "Preset").objects.filter(
        owner=None, name__in=[p["name"] for p in SHIPPED]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [("chat", "0002_pins_undo_presets")]
    operations = [migrations.RunPython(add, remove)]
