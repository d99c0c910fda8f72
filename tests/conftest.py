"""The shared cast and the real services.

The suite runs the production shape: Postgres and Redis on 127.0.0.1 (``make test`` sets
DATABASE_URL and REDIS_URL). When either is unreachable the tests fail; they never skip.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis
from django.conf import settings

from apps.catalog.models import LanguageModel, ModelVersion
from apps.catalog.packaged import register_packaged_models
from tests.factories import UserFactory


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
    register_packaged_models(LanguageModel, ModelVersion)
    return LanguageModel.objects.get(slug="smollm2-135m-instruct")


@pytest.fixture
def fake_engine(settings) -> Iterator[None]:
    """Workers in this process use the deterministic fake engine (see engines/fake.py)."""
    from apps.inference import engines

    settings.INFERENCE_ENGINE = "fake"
    engines._engines.clear()
    yield
    engines._engines.clear()


@pytest.fixture
def inline_worker(fake_engine, transactional_db) -> Iterator[None]:
    """A real Celery worker on the Redis broker, as threads of the test process."""
    from celery.contrib.testing.worker import start_worker

    from playground.celery import app

    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        queues=["inference"],
        perform_ping_check=False,
        shutdown_timeout=20,
    ):
        yield
