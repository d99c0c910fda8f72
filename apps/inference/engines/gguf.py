"""The files and the build behind the llama.cpp engine (``llamacpp.py``): the GGUF file a version
names (a fine-tune's, written by ``gguf_export``), the tokenizer inside it, the file's weights
rewritten by llama.cpp's own quantizer, the one loaded copy of a file's weights that a base model
and its adapters share, and a check that the installed llama.cpp was built for this CPU."""

from __future__ import annotations

import ctypes
import fcntl
import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, ClassVar

import llama_cpp as llama

from apps.core.sources import local_folder, packaged_path
from apps.inference.protocol import ModelSpec

from .gguf_export import ADAPTER_FILE, MODEL_FILE, ExportError, export_lora

logger = logging.getLogger("apps.inference.engines.llamacpp")
_WARN = 3  # ggml's log level for warnings (errors are 4); below it llama.cpp is chatty


@llama.llama_log_callback
def _log(level: int, text: bytes, user_data: Any) -> None:
    if level in (_WARN, _WARN + 1):
        logger.warning("llama.cpp: %s", text.decode(errors="replace").rstrip())


# Whoever imports llama.cpp through this module (the engine, the web's token counter) gets its
# warnings in our log and nothing of its chatter.
llama.llama_log_set(_log, None)

# The instruction sets llama.cpp's build reports, by the flag /proc/cpuinfo shows for each.
_INSTRUCTIONS = {
    "AVX": "avx",
    "AVX2": "avx2",
    "AVX_VNNI": "avx_vnni",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}


def missing_instructions(system_info: str, cpuinfo: str) -> list[str]:
    """The instruction sets the llama.cpp build uses (``llama_print_system_info``) that this CPU
    lacks (the flags in ``/proc/cpuinfo``): a build made on another machine would otherwise die
    of an illegal instruction in the middle of a request."""
    line = next((row for row in cpuinfo.splitlines() if row.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    if not flags:
        return []  # not x86 Linux: nothing to compare
    missing = []
    for part in system_info.replace("CPU :", "|").split("|"):  # "CPU : SSE3 = 1 | AVX = 1 | ..."
        name, _, value = (piece.strip() for piece in part.partition("="))
        if value == "1" and name in _INSTRUCTIONS and _INSTRUCTIONS[name] not in flags:
            missing.append(name)
    return missing


def check_build() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return
    missing = missing_instructions(llama.llama_print_system_info().decode(), cpuinfo.read_text())
    if missing:
        raise RuntimeError(
            f"the installed llama.cpp was built for a CPU with {', '.join(missing)}, which this "
            "one lacks; run `make install` on this machine to build it for this CPU"
        )


def gguf_file(spec: ModelSpec) -> Path:
    """The GGUF file of ``spec``'s weights (a LoRA adapter's: its base's); FileNotFoundError
    saying why when it has none."""
    if spec.source_kind == "adapter":
        if spec.base is None:
            raise FileNotFoundError(f"the adapter {spec.source} names no base model")
        return gguf_file(spec.base)
    if spec.source_kind == "packaged":
        path = packaged_path(spec.source)
    elif spec.source_kind == "local":
        path = local_folder(spec.source)
        if path.is_dir() and (path / MODEL_FILE).is_file():
            path = path / MODEL_FILE  # a full fine-tune, exported at deployment
    else:
        path = Path(spec.source)
    if path.suffix != ".gguf" or not path.is_file():
        raise FileNotFoundError(
            f"llama.cpp serves GGUF files, and {spec.source} is not one; set the version's engine "
            "to auto or transformers"
        )
    return path


def lora_file(spec: ModelSpec) -> Path | None:
    """The GGUF LoRA adapter of an adapter version (written from its peft files the first time
    when its fine-tune was deployed before adapters were exported); None for other versions."""
    if spec.source_kind != "adapter":
        return None
    folder = local_folder(spec.source)
    path = folder / ADAPTER_FILE
    if not path.is_file():
        with open(folder / f".{ADAPTER_FILE}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not path.is_file():
                try:
                    export_lora(folder, gguf_file(spec))
                except ExportError as exc:
                    raise RuntimeError(
                        f"{spec.source} cannot be served by llama.cpp: {exc}"
                    ) from None
    return path


class SharedModel:
    """One ``llama_model`` per weights file in this process, held by every engine that serves it
    (a base model and the LoRA adapters over it): the weights are in memory once. The first
    holder counts their bytes as its own, so the registry's sum counts them once too."""

    _held: ClassVar[dict[Path, SharedModel]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path, pointer: Any) -> None:
        self.path, self.pointer = path, pointer
        self.bytes = int(llama.llama_model_size(pointer))
        self.holders: list[object] = []

    @classmethod
    def acquire(cls, path: Path, holder: object, *, gpu_layers: int) -> SharedModel:
        with cls._lock:
            shared = cls._held.get(path)
            if shared is None:
                params = llama.llama_model_default_params()
                params.n_gpu_layers = gpu_layers
                pointer = llama.llama_model_load_from_file(str(path).encode(), params)
                if not pointer:
                    raise RuntimeError(f"llama.cpp could not read {path.name}")
                shared = cls._held[path] = SharedModel(path, pointer)
            shared.holders.append(holder)
            return shared

    def release(self, holder: object) -> None:
        with self._lock:
            if holder in self.holders:
                self.holders.remove(holder)
            if not self.holders and self._held.get(self.path) is self:
                del self._held[self.path]
                llama.llama_model_free(self.pointer)
                self.pointer = None

    def bytes_for(self, holder: object) -> int:
        holders = self.holders
        return self.bytes if holders and holders[0] is holder else 0


def gguf_tokenizer(spec: ModelSpec, gguf: Path, cache_dir: Path) -> Any:
    """The transformers tokenizer stored in ``gguf`` (its chat template included, or the
    version's own), read once and kept under ``cache_dir`` (safe across processes). An adapter
    version's is its base file's."""
    from transformers import AutoTokenizer

    folder = cache_dir / (spec.key.replace("/", "_").replace("@", "--") + "--tokenizer")
    stamp = {"source": str(gguf), "size": gguf.stat().st_size}
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = folder / "playground-source.json"
        if not (stamp_file.exists() and json.loads(stamp_file.read_text()) == stamp):
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            if (gguf.parent / "tokenizer_config.json").is_file():
                # A fine-tune's folder: the tokenizer it was trained with, saved beside it
                # (transformers would read that folder's files over the GGUF's and lose the
                # chat template).
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent)
            else:
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer.save_pretrained(tmp)
            (tmp / "playground-source.json").write_text(json.dumps(stamp))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    return tokenizer


# What INFERENCE_GGUF_TYPE may ask for: llama.cpp's own quantizer rewrites the weights at load.
WEIGHT_TYPES = {
    "q8_0": llama.LLAMA_FTYPE_MOSTLY_Q8_0,
    "f16": llama.LLAMA_FTYPE_MOSTLY_F16,
    "f32": llama.LLAMA_FTYPE_ALL_F32,  # for comparisons with the torch engine (fp32)
}


def requantized(gguf: Path, kind: str, cache_dir: Path, *, threads: int) -> Path:
    """``gguf`` with its weights rewritten as ``kind`` (a WEIGHT_TYPES key) by llama.cpp's own
    quantizer (``llama_model_quantize``, requantizing from whatever the file holds), written once
    and kept under ``cache_dir`` (safe across processes). The rewritten weights carry the file's
    own rounding: a Q4_1 file made Q8_0 answers as the Q4_1 file does, within Q8_0's error."""
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    target = cache_dir / "gguf" / f"{gguf.stem}.{stamp}.{kind}.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        partial = target.with_name(target.name + ".partial")
        params = llama.llama_model_quantize_default_params()
        params.ftype = WEIGHT_TYPES[kind]
        params.allow_requantize = True
        params.nthread = threads
        done = llama.llama_model_quantize(
            str(gguf).encode(), str(partial).encode(), ctypes.byref(params)
        )
        if done != 0:
            partial.unlink(missing_ok=True)
            raise RuntimeError(f"llama.cpp could not rewrite {gguf.name} as {kind}")
        os.replace(partial, target)
    return target
