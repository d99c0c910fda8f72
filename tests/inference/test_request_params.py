"""One precedence for a request's sampling parameters, whoever asks: the version's defaults, then
what the caller sets, then a seed. Compare and completion mode ignored the version's defaults
before there was one request builder."""

from __future__ import annotations

import pytest
from django.urls import reverse

from apps.chat.services import chat_message_send
from apps.core.errors import ServiceError
from apps.inference.models import Generation
from apps.inference.services import sampling_params_for, version_test_prompt
from tests.factories import ConversationFactory, UserFactory

pytestmark = pytest.mark.django_db

DEFAULTS = {
    "temperature": 0.4,
    "top_k": 7,
    "repetition_penalty": 1.3,
    "stop": ["###"],
    "max_tokens": 50,
}


@pytest.fixture
def version(chat_model):
    version = chat_model.active_version
    version.default_params = DEFAULTS
    version.save()
    return version


def params_of(**filters):
    generation = Generation.objects.get(**filters)
    return {
        k: generation.params[k]
        for k in ("temperature", "top_k", "repetition_penalty", "stop", "max_tokens")
    }


def test_compare_and_completion_mode_apply_the_versions_defaults(client, owner, version):
    client.force_login(owner)
    slug = version.model.slug
    compared = client.post(
        reverse("chat-compare"),
        {"a": slug, "b": slug, "text": "Hi", "temperature": "0", "max_tokens": "20"},
    )
    assert compared.status_code == 201
    completed = client.post(
        reverse("chat-complete"),
        {"model": slug, "prompt": "Once", "temperature": "0.9", "max_tokens": "30"},
    )
    assert completed.status_code == 201
    from_defaults = {"top_k": 7, "repetition_penalty": 1.3, "stop": ["###"]}
    # What the form sets wins; the version's defaults fill in the rest.
    for generation in Generation.objects.filter(kind="chat"):
        assert params_of(pk=generation.pk) == {
            **from_defaults,
            "temperature": 0.0,
            "max_tokens": 20,
        }
    assert params_of(kind="completion") == {**from_defaults, "temperature": 0.9, "max_tokens": 30}
    assert all(isinstance(g.params["seed"], int) for g in Generation.objects.all())


def test_a_chat_answer_and_an_admin_test_apply_them_too(owner, version):
    conversation = ConversationFactory(owner=owner, temperature=1.1, top_p=0.8, max_tokens=64)
    chat_message_send(conversation=conversation, text="Hello")
    assert params_of(user=owner) == {**DEFAULTS, "temperature": 1.1, "max_tokens": 64}

    admin = UserFactory(is_staff=True)
    version_test_prompt(version=version, actor=admin, prompt="Say hi")
    # The test's house default is greedy, but the version's own temperature wins over it; its
    # max_tokens stays within the test's cap.
    assert params_of(user=admin) == DEFAULTS


def test_the_precedence_and_its_bounds(version):
    params = sampling_params_for(version, {"top_k": None, "top_p": 0.5}, fallback={"top_p": 0.1})
    assert (params.top_k, params.top_p, params.seed) == (7, 0.5, None)
    assert sampling_params_for(version, {"seed": 3}, new_seed=True).seed == 3
    assert sampling_params_for(version, new_seed=True).seed is not None
    with pytest.raises(ServiceError) as refused:
        sampling_params_for(version, {"temperature": 9})
    assert refused.value.param == "temperature"
