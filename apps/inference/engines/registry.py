"""The models this worker process has loaded: one server per model version, loaded on first use,
kept within a memory budget by unloading the least recently used.

A server (``base.ModelServer``) is a generation engine (``EngineClient``), an embedder or a
classifier. Work holds one with ``lease``; a server under lease is never unloaded.
``INFERENCE_MEMORY_MB`` (0: no limit) bounds the weights held: before a load the registry unloads
idle servers, oldest use first, to make room for the newcomer's estimated size, and once the
newcomer reports its real size it does so again. A server that is busy stays, so the budget can
be exceeded while every server is in use; the worker's heartbeat shows it.

Importing this module does not import torch: backends are imported only when a worker first
needs one, so web processes never load them.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from django.conf import settings

from apps.core.sources import local_folder, packaged_path
from apps.inference.protocol import ModelSpec

from .base import Classifier, Embedder, EngineClient, ModelServer
from .gguf_export import MODEL_FILE
from .thread import Pacing

logger = logging.getLogger(__name__)

Kind = Literal["generate", "embeddings", "classifier"]


@dataclass
class Loaded:
    spec: ModelSpec
    kind: Kind
    server: ModelServer
    last_used: float = field(default_factory=time.monotonic)
    leases: int = 0
    retired: bool = False  # replaced or evicted while leased: close when the last lease ends
    estimate: int = 0  # what it was expected to take, counted until it reports its real size

    @property
    def memory_bytes(self) -> int:
        return self.server.memory_bytes or self.estimate


_loaded: OrderedDict[str, Loaded] = OrderedDict()  # least recently used first
_sizes: dict[str, int] = {}  # what each key took when it was last loaded, for estimates
_lock = threading.RLock()


def get_engine(spec: ModelSpec) -> EngineClient:
    """The engine serving ``spec`` in this process; loading starts on the first call.
    Long work should hold it with ``lease`` instead, so it is not unloaded meanwhile."""
    with _lock:
        return _get(spec, "generate").server  # type: ignore[return-value]


@overload
def lease(spec: ModelSpec) -> AbstractContextManager[EngineClient]: ...
@overload
def lease(spec: ModelSpec, kind: Literal["generate"]) -> AbstractContextManager[EngineClient]: ...
@overload
def lease(spec: ModelSpec, kind: Literal["embeddings"]) -> AbstractContextManager[Embedder]: ...
@overload
def lease(spec: ModelSpec, kind: Literal["classifier"]) -> AbstractContextManager[Classifier]: ...
@overload
def lease(spec: ModelSpec, kind: Kind) -> AbstractContextManager[ModelServer]: ...


def lease(spec: ModelSpec, kind: Kind = "generate") -> AbstractContextManager[ModelServer]:
    """The server for ``spec`` (of ``kind``), kept loaded until the block ends."""
    return _lease(spec, kind)


@contextmanager
def _lease(spec: ModelSpec, kind: Kind) -> Iterator[ModelServer]:
    with _lock:
        entry = _get(spec, kind)
        entry.leases += 1
    try:
        yield entry.server
    finally:
        with _lock:
            entry.leases -= 1
            entry.last_used = time.monotonic()
            if entry.retired:
                if entry.leases == 0:
                    _close(entry)
            else:
                _loaded.move_to_end(spec.key)
            enforce_budget()


def unload(key: str) -> bool:
    """Unload the version ``key`` (``slug@label``) from this process; False if it was not loaded.
    A server in use is unloaded when its last request ends."""
    with _lock:
        entry = _loaded.pop(key, None)
        if entry is None:
            return False
        _retire(entry)
        return True


def enforce_budget(room_for: int = 0, *, keep: str | None = None, wait: bool = True) -> None:
    """Unload idle servers, least recently used first, until the loaded ones plus ``room_for``
    bytes fit in INFERENCE_MEMORY_MB. ``keep``, by default the most recently used, stays: a model
    larger than the budget alone is still served, rather than reloaded for every request."""
    budget = settings.INFERENCE_MEMORY_MB << 20
    if not budget:
        return
    # The heartbeat passes wait=False: an encoder loading under the lock must not stall it.
    if not _lock.acquire(blocking=wait):
        return
    try:
        _enforce(budget, room_for, keep)
    finally:
        _lock.release()


def _enforce(budget: int, room_for: int, keep: str | None) -> None:
    if keep is None and not room_for and _loaded:
        keep = next(reversed(_loaded))
    used = sum(e.memory_bytes for e in _loaded.values())
    for key, entry in list(_loaded.items()):
        if used + room_for <= budget:
            return
        if key == keep or entry.leases:
            continue
        logger.info("unloading %s to stay within INFERENCE_MEMORY_MB", key)
        used -= entry.memory_bytes
        del _loaded[key]
        _retire(entry)
    if used + room_for > budget:
        logger.warning(
            "loaded models take %d MiB of INFERENCE_MEMORY_MB=%d: the rest are in use",
            (used + room_for) >> 20,
            settings.INFERENCE_MEMORY_MB,
        )


@dataclass(frozen=True)
class LoadedStatus:
    key: str
    kind: str
    engine: str  # the backend serving it: "llamacpp", "transformers", "embeddings", ...
    version_id: int | None
    state: str  # "loading", "ready" or "failed: <reason>"
    memory_bytes: int
    in_use: int
    idle_seconds: float


def status() -> list[LoadedStatus]:
    """What this process has loaded, most recently used first (for the worker's heartbeat).
    Without the lock, so a load in progress never delays a heartbeat: copying the dict is one
    step under the GIL."""
    now = time.monotonic()
    entries = list(_loaded.items())
    return [
        LoadedStatus(
            key=key,
            kind=entry.kind,
            engine=entry.server.name,
            version_id=entry.spec.version_id,
            state=_state(entry.server),
            memory_bytes=entry.memory_bytes,
            in_use=entry.leases,
            idle_seconds=round(now - entry.last_used, 1),
        )
        for key, entry in reversed(entries)
    ]


def import_backends() -> None:
    """Import torch and transformers under the lock, before code outside this package (the
    trainers, token counting) uses them in a thread of its own (see ``_get``)."""
    with _lock:
        from . import classifier, embeddings, transformers_backend  # noqa: F401


def reset() -> None:
    """Unload everything (tests switch engines between cases)."""
    with _lock:
        for key in list(_loaded):
            unload(key)
        _sizes.clear()


# -- inside the lock -------------------------------------------------------------------------


def _get(spec: ModelSpec, kind: Kind) -> Loaded:
    entry = _loaded.get(spec.key)
    if entry is not None and (entry.spec != spec or entry.kind != kind or _failed(entry.server)):
        # The version was edited since it loaded, or its load failed: load it afresh.
        del _loaded[spec.key]
        _retire(entry)
        entry = None
    if entry is None:
        estimate = _estimate(spec)
        enforce_budget(estimate)
        # Backends are imported under the lock too: transformers' lazy imports are not safe
        # when two threads import it for the first time at once.
        entry = Loaded(spec, kind, _create(spec, kind), estimate=estimate)
        _loaded[spec.key] = entry
    _loaded.move_to_end(spec.key)
    entry.last_used = time.monotonic()
    reported = entry.server.memory_bytes
    if reported:
        _sizes[spec.key] = reported
        enforce_budget(keep=spec.key)
    return entry


def _retire(entry: Loaded) -> None:
    entry.retired = True
    if entry.leases == 0:
        _close(entry)


def _close(entry: Loaded) -> None:
    entry.server.close()


def _failed(server: ModelServer) -> bool:
    try:
        server.check_health()
    except RuntimeError:
        return True
    return False


def _state(server: ModelServer) -> str:
    try:
        server.check_health()
    except RuntimeError as exc:
        return f"failed: {exc}"
    return "ready" if server.loaded else "loading"


def engine_for(spec: ModelSpec) -> str:
    """The backend that serves ``spec``: INFERENCE_ENGINE when it names one (``fake`` in tests),
    else the version's own choice, else (``auto``) llama.cpp for a GGUF file or a fine-tune of
    one, and the torch decoder for safetensors weights."""
    choice = settings.INFERENCE_ENGINE if settings.INFERENCE_ENGINE != "auto" else spec.engine
    if choice == "auto":
        return "llamacpp" if gguf_weights(spec) else "transformers"
    return choice


def gguf_weights(spec: ModelSpec) -> bool:
    """A GGUF file; a LoRA adapter over one (``gguf_export`` writes its GGUF form); or a full
    fine-tune's folder that holds its exported ``model.gguf``."""
    if spec.source_kind == "adapter":
        return spec.base is not None and gguf_weights(spec.base)
    if spec.source_kind == "local" and not spec.is_gguf:
        try:
            return (local_folder(spec.source) / MODEL_FILE).is_file()
        except (OSError, ValueError):
            return False
    return spec.is_gguf


def _estimate(spec: ModelSpec) -> int:
    """Bytes ``spec`` will take once loaded: what it took last time, else its parameter count
    (from the safetensors headers) at the serving precision, else a GGUF file's size for
    llama.cpp (it serves the file's own weights) and four times it for the torch decoder (4-bit
    weights served in 16). The check after loading corrects a wrong guess."""
    if spec.key in _sizes:
        return _sizes[spec.key]
    dtype = settings.INFERENCE_DTYPE if spec.dtype == "auto" else spec.dtype
    per_parameter = 4 if dtype == "float32" else 2
    try:
        if spec.source_kind == "packaged":
            path = packaged_path(spec.source)
        elif spec.source_kind == "local":
            path = local_folder(spec.source)
        else:
            return 0
        if path.suffix == ".gguf":
            return path.stat().st_size * (1 if engine_for(spec) == "llamacpp" else 4)
        return per_parameter * sum(_parameters(f) for f in Path(path).glob("*.safetensors"))
    except (OSError, ValueError):
        return 0  # the load itself reports what is wrong


def _parameters(safetensors_file: Path) -> int:
    """The parameter count in a safetensors file, from its header alone."""
    with open(safetensors_file, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def _create(spec: ModelSpec, kind: Kind) -> ModelServer:
    device = settings.INFERENCE_DEVICE if spec.device == "auto" else spec.device
    if kind == "embeddings":
        from .embeddings import TransformersEmbedder

        return TransformersEmbedder(spec, device=device, threads=settings.INFERENCE_THREADS)
    if kind == "classifier":
        from .classifier import TransformersClassifier

        return TransformersClassifier(spec, device=device, threads=settings.INFERENCE_THREADS)
    engine = engine_for(spec)
    pacing = Pacing(
        settings.STREAM_FLUSH_SECONDS,
        settings.STREAM_FLUSHES_PER_SECOND,
        settings.BATCH_FLUSH_SECONDS,
    )
    if engine == "fake":
        from .fake import FakeEngine

        return FakeEngine(spec, pacing=pacing)
    if engine == "llamacpp":
        from .llamacpp import LlamaCppEngine

        return LlamaCppEngine(
            spec,
            cache_dir=settings.MODEL_CACHE_DIR,
            threads=settings.INFERENCE_THREADS,
            max_batch=settings.INFERENCE_MAX_BATCH,
            kv_budget_bytes=settings.INFERENCE_KV_CACHE_MB << 20,
            prefill_tokens=settings.INFERENCE_PREFILL_TOKENS,
            weight_type=settings.INFERENCE_GGUF_TYPE,
            pacing=pacing,
        )
    from .transformers_backend import TransformersEngine

    return TransformersEngine(
        spec,
        cache_dir=settings.MODEL_CACHE_DIR,
        device=device,
        dtype=settings.INFERENCE_DTYPE if spec.dtype == "auto" else spec.dtype,
        threads=settings.INFERENCE_THREADS,
        max_batch=settings.INFERENCE_MAX_BATCH,
        kv_budget_bytes=settings.INFERENCE_KV_CACHE_MB << 20,
        pacing=pacing,
    )
