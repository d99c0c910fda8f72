"""One engine per model version per worker process, created on first use.

Importing this package does not import torch: the transformers backend is imported only when a
worker first needs it, so web processes never load it.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings

from apps.inference.protocol import ModelSpec

from .base import EngineClient

_engines: dict[str, EngineClient] = {}
_embedders: dict[str, Any] = {}
_lock = threading.Lock()


def get_engine(spec: ModelSpec) -> EngineClient:
    """The engine serving ``spec`` in this process; loading starts on the first call."""
    with _lock:
        engine = _engines.get(spec.key)
        if engine is not None and _failed(engine):
            engine = None  # a version that failed to load gets a fresh attempt
        if engine is None:
            engine = _engines[spec.key] = _create(spec)
        return engine


def get_embedder(spec: ModelSpec) -> Any:
    """The embedding engine serving ``spec`` in this process (loaded on the first call)."""
    return _encoder(spec, "embeddings")


def get_classifier(spec: ModelSpec) -> Any:
    """The text classifier serving ``spec`` in this process (loaded on the first call)."""
    return _encoder(spec, "classifier")


def _encoder(spec: ModelSpec, kind: str) -> Any:
    # Backends are imported under the lock too: transformers' lazy imports are not safe when two
    # threads import it for the first time at once.
    with _lock:
        encoder = _embedders.get(spec.key)
        if encoder is None:
            if kind == "classifier":
                from .classifier import TransformersClassifier as factory
            else:
                from .embeddings import TransformersEmbedder as factory  # type: ignore[assignment]
            encoder = factory(
                spec, device=settings.INFERENCE_DEVICE, threads=settings.INFERENCE_THREADS
            )
            _embedders[spec.key] = encoder
        return encoder


def import_backends() -> None:
    """Import torch and transformers under the lock, before code outside this package (the
    trainers, token counting) uses them in a thread of its own (see ``_encoder``)."""
    with _lock:
        from . import classifier, embeddings, transformers_backend  # noqa: F401


def _failed(engine: EngineClient) -> bool:
    try:
        engine.check_health()
    except RuntimeError:
        return True
    return False


def _create(spec: ModelSpec) -> EngineClient:
    if settings.INFERENCE_ENGINE == "fake":
        from .fake import FakeEngine

        return FakeEngine(spec)
    from .transformers_backend import TransformersEngine

    return TransformersEngine(
        spec,
        cache_dir=settings.MODEL_CACHE_DIR,
        device=settings.INFERENCE_DEVICE,
        dtype=settings.INFERENCE_DTYPE,
        threads=settings.INFERENCE_THREADS,
        max_batch=settings.INFERENCE_MAX_BATCH,
        kv_budget_bytes=settings.INFERENCE_KV_CACHE_MB << 20,
    )


def loaded_engines() -> dict[str, EngineClient]:
    with _lock:
        return dict(_engines)
