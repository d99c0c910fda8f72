"""The shared cast and the real services.

The suite runs the production shape: Postgres and Redis on 127.0.0.1 (``make test`` sets
DATABASE_URL and REDIS_URL). When either is unreachable the tests fail; they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.layers import channel_layers
from django.conf import settings

from apps.catalog.models import LanguageModel
from tests.factories import ApiKeyFactory, UserFactory, packaged_chat_model
from tests.helpers import ROOT, Process, child_env, free_port


def pytest_configure(config: pytest.Config) -> None:
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"{' and '.join(missing)} unset: the suite runs against Postgres and Redis; "
            "use `make test`, which sets both."
        )


@pytest.fixture(scope="session", autouse=True)
def _redis_clean() -> None:
    """Fail at once when Redis is down, and start from an empty broker and channel layer."""
    client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=3)
    client.ping()
    client.flushdb()


@pytest.fixture(scope="session", autouse=True)
def _end_stray_connections(django_db_setup) -> Iterator[None]:
    """Worker threads and sync_to_async threads keep database connections open; end them at the
    close of the session so the test database can be dropped."""
    import psycopg

    db = dict(settings.DATABASES["default"])
    yield
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            [db["NAME"]],
        )


@pytest.fixture(scope="session", autouse=True)
def _own_storage(tmp_path_factory) -> None:
    """Uploaded datasets and trained models go to a folder of this session, for this process and
    every server and worker it starts (they inherit the environment). Heartbeats are quick here so
    that the tests of a lost worker do not wait long."""
    root = tmp_path_factory.mktemp("storage")
    values = {
        # Models the tests build are saved under the session's temporary folder: that is the
        # models root local sources must lie under.
        "MODELS_ROOT": str(tmp_path_factory.getbasetemp()),
        "WORKER_HEARTBEAT_SECONDS": "0.5",
        "WORKER_LOST_SECONDS": "10",
        "METRICS_TOKEN": "metrics-token-for-tests",
        "MEDIA_ROOT": str(root / "media"),
        "FINETUNE_OUTPUT_DIR": str(root / "finetuned"),
    }
    os.environ.update(values)
    settings.MODELS_ROOT = Path(values["MODELS_ROOT"]).resolve()
    settings.WORKER_HEARTBEAT_SECONDS = 0.5
    settings.WORKER_LOST_SECONDS = 10.0
    settings.METRICS_TOKEN = values["METRICS_TOKEN"]
    settings.MEDIA_ROOT = Path(values["MEDIA_ROOT"])
    settings.FINETUNE_OUTPUT_DIR = Path(values["FINETUNE_OUTPUT_DIR"])


@pytest.fixture(autouse=True)
def _a_channel_layer_per_test() -> Iterator[None]:
    """Every test gets channel layer objects of its own. Each async test runs on its own event
    loop, and a loop that ends while one of its tasks waits inside channels_redis's ``receive``
    leaves that layer object's lock for the process's channels taken and bound to the dead loop:
    the next test's sockets on the same object would fail ("bound to a different event loop"). A
    server process runs one loop for its whole life, so this is the tests' own concern."""
    yield
    channel_layers.backends.clear()


@pytest.fixture(scope="session")
def model_cache_dir() -> Path:
    """The repository's model cache, shared with `make run`, so the GGUF is converted only once."""
    return settings.MODEL_CACHE_DIR


def smollm_tokenizer_from(cache_dir: Path) -> Any:
    """The packaged SmolLM2's tokenizer (its chat template included)."""
    from apps.catalog.packaged import PACKAGED
    from apps.inference.engines.transformers_backend import load_tokenizer
    from apps.inference.protocol import ModelSpec

    smollm = PACKAGED[0]
    spec = ModelSpec(
        key=f"{smollm['slug']}@{smollm['label']}",
        source_kind="packaged",
        source=smollm["source"],
        context_length=smollm["context_length"],
    )
    return load_tokenizer(spec, cache_dir)


def build_tiny_model(
    folder: Path, *, seed: int, cache_dir: Path, architecture: str = "llama"
) -> Path:
    """A small randomly initialised causal LM (``llama``, or ``mistral`` for an architecture the
    Llama decoder does not cover) with SmolLM2's tokenizer, saved into ``folder``
    (safetensors); different seeds give different weights, hence different answers."""
    import torch
    import transformers

    tokenizer = smollm_tokenizer_from(cache_dir)
    torch.manual_seed(seed)
    name = architecture.capitalize()
    config = getattr(transformers, f"{name}Config")(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    getattr(transformers, f"{name}ForCausalLM")(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, model_cache_dir) -> Path:
    """A small randomly initialised Llama with SmolLM2's tokenizer, saved as a local folder."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-llama"), seed=0, cache_dir=model_cache_dir
    )


@pytest.fixture(scope="session")
def other_tiny_model_dir(tmp_path_factory, model_cache_dir) -> Path:
    """Another tiny Llama, with other weights (a second version, or a second model)."""
    return build_tiny_model(
        tmp_path_factory.mktemp("tiny-llama-b"), seed=1, cache_dir=model_cache_dir
    )


@pytest.fixture
def owner(db):
    return UserFactory(username="owner")


@pytest.fixture
def teammate(db):
    return UserFactory(username="teammate")


@pytest.fixture
def stranger(db):
    return UserFactory(username="stranger")


@pytest.fixture
def chat_model(db) -> LanguageModel:
    # Transactional tests flush the database afterwards, migration-seeded rows included.
    return packaged_chat_model()


@pytest.fixture
def api_key(owner, chat_model) -> str:
    """An inference key of ``owner``'s, as a client sends it."""
    return ApiKeyFactory(user=owner).key  # type: ignore[no-any-return]


@pytest.fixture
def fake_engine(settings) -> Iterator[None]:
    """Workers in this process use the deterministic fake engine (see engines/fake.py)."""
    from apps.inference.engines import registry

    settings.INFERENCE_ENGINE = "fake"
    registry.reset()
    yield
    registry.reset()


@pytest.fixture
def inline_worker(fake_engine, transactional_db) -> Iterator[None]:
    """A real Celery worker on the Redis broker, as threads of the test process, started as the
    embedded default starts its workers (heartbeat and sweeps included)."""
    from playground.celery import app
    from playground.worker import embedded_worker

    with embedded_worker(app, hostname="inline@tests", queues=["inference"], concurrency=4):
        yield


def child_database_url(port: int | None = None) -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{port or db['PORT']}/{db['NAME']}"


def celery_worker(
    queue: str,
    log_dir: Path,
    *,
    pool: str = "threads",
    concurrency: int = 4,
    name: str = "",
    **env: str,
) -> Process:
    """A `celery worker` process on the test database and the Redis broker, ready to take tasks.
    ``env`` adds to its environment (INFERENCE_MEMORY_MB and the like)."""
    worker = Process(
        [
            str(ROOT / ".venv/bin/celery"),
            "-A",
            "playground",
            "worker",
            "-Q",
            queue,
            "--pool",
            pool,
            "--concurrency",
            str(concurrency),
            "--loglevel",
            "INFO",
            "--hostname",
            name or f"test-{queue}@%h",
        ],
        env=child_env(
            **{
                "DATABASE_URL": child_database_url(),
                "REDIS_URL": settings.REDIS_URL,
                "MODEL_CACHE_DIR": str(settings.MODEL_CACHE_DIR),
                **env,
            }
        ),
        log=log_dir / f"{queue}-worker.log",
    )
    try:
        worker.wait_for_log("ready.", timeout=120)
    except BaseException:
        worker.stop()
        raise
    return worker


@pytest.fixture(scope="module")
def real_worker(django_db_setup, tmp_path_factory) -> Iterator[Process]:
    """A `celery worker` process serving the inference queue with the real engine. Module-scoped:
    it must not overlap ``inline_worker``."""
    worker = celery_worker("inference", tmp_path_factory.mktemp("worker"))
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def training_worker(django_db_setup, tmp_path_factory) -> Iterator[Process]:
    """A `celery worker` process on the training queue: one job at a time, as in production."""
    worker = celery_worker(
        "training", tmp_path_factory.mktemp("training"), pool="solo", concurrency=1
    )
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def live_server_url(django_db_setup, tmp_path_factory) -> Iterator[str]:
    """`manage.py serve` in the production shape (test database, Redis), as a separate process."""
    port = free_port()
    server = Process(
        [str(ROOT / ".venv/bin/python"), "manage.py", "serve", "--port", str(port)],
        env=child_env(DATABASE_URL=child_database_url(), REDIS_URL=settings.REDIS_URL),
        log=tmp_path_factory.mktemp("server") / "server.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_for_http(f"{url}/accounts/login/", timeout=60)
        yield url
    finally:
        server.stop()
