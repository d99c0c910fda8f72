from django.apps import AppConfig


class FinetuningConfig(AppConfig):
    name = "apps.finetuning"
    label = "finetuning"
