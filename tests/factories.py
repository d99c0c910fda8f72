"""factory_boy factories for what the tests build: users, keys, models and versions,
conversations, messages and generations. Defaults are the packaged chat model and an ordinary
chat turn; a test names only what it is about."""

from __future__ import annotations

from typing import Any

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from apps.accounts.models import ApiKey, User
from apps.accounts.services import api_key_issue
from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.packaged import register_packaged_models
from apps.catalog.selectors import DEFAULT_CHAT_MODEL
from apps.chat.models import Conversation, Message
from apps.core.models import Worker
from apps.inference.models import Generation
from apps.inference.protocol import SamplingParams

PASSWORD = "correct-horse-battery-9"


def packaged_chat_model() -> LanguageModel:
    """The packaged chat model, registered if a transactional test's flush removed it."""
    register_packaged_models(LanguageModel, ModelVersion)
    return LanguageModel.objects.get(slug=DEFAULT_CHAT_MODEL)


class UserFactory(DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):  # noqa: N805
        if create:
            obj.save()


class ApiKeyFactory(DjangoModelFactory):
    """A key issued as its owner would issue it; ``.key`` is what a client sends."""

    class Meta:
        model = ApiKey

    user = factory.SubFactory(UserFactory)
    name = "tests"
    scopes = factory.LazyFunction(lambda: [ApiKey.Scope.INFERENCE])
    expires_at = None

    @classmethod
    def _create(cls, model_class: Any, *args: Any, **kwargs: Any) -> ApiKey:
        row, key = api_key_issue(**kwargs)
        row.key = key  # type: ignore[attr-defined]
        return row


class LanguageModelFactory(DjangoModelFactory):
    class Meta:
        model = LanguageModel

    slug = factory.Sequence(lambda n: f"model-{n}")
    display_name = factory.LazyAttribute(lambda o: o.slug.title())
    task = LanguageModel.Task.CHAT


class ModelVersionFactory(DjangoModelFactory):
    """A version whose weights need not exist (most tests never load it)."""

    class Meta:
        model = ModelVersion

    model = factory.SubFactory(LanguageModelFactory)
    label = factory.Sequence(lambda n: f"v{n}")
    source_kind = ModelVersion.Source.LOCAL
    source = "/nonexistent"
    context_length = 512
    is_active = False


class WorkerFactory(DjangoModelFactory):
    """A worker's heartbeat row, live unless ``last_seen`` says otherwise."""

    class Meta:
        model = Worker

    hostname = factory.Sequence(lambda n: f"worker{n}@tests")
    host = "tests"
    pid = factory.Sequence(lambda n: n + 1)
    queues = factory.LazyFunction(lambda: ["inference"])
    device = "CPU, 2 cores"
    started_at = factory.LazyFunction(timezone.now)
    last_seen = factory.LazyFunction(timezone.now)


class ConversationFactory(DjangoModelFactory):
    class Meta:
        model = Conversation

    owner = factory.SubFactory(UserFactory)
    model = factory.LazyFunction(packaged_chat_model)


class MessageFactory(DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    role = Message.Role.USER
    content = "Hello"


class GenerationFactory(DjangoModelFactory):
    """A chat generation, queued unless told otherwise."""

    class Meta:
        model = Generation

    user = factory.SubFactory(UserFactory)
    model_version = factory.LazyFunction(lambda: packaged_chat_model().active_version)
    kind = Generation.Kind.CHAT
    messages = factory.LazyFunction(lambda: [{"role": "user", "content": "hello world"}])
    params = factory.LazyFunction(lambda: SamplingParams().model_dump(mode="json"))


def answered_turn(
    conversation: Conversation, question: str, answer: str, **generation: Any
) -> Message:
    """A user message and its answer (finished, unless ``generation`` says otherwise) in
    ``conversation``; returns the answer's message."""
    MessageFactory(conversation=conversation, content=question)
    done = GenerationFactory(
        user=conversation.owner,
        model_version=conversation.model.active_version,
        messages=[{"role": "user", "content": question}],
        output=answer,
        **{"status": Generation.Status.SUCCEEDED, **generation},
    )
    return MessageFactory(conversation=conversation, role=Message.Role.ASSISTANT, generation=done)
