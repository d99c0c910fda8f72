"""Counting a text's tokens outside the worker, without torch: what a web process tells a person
about a document before it goes into a prompt (the chat's document chips, and its refusal of a
document that would not fit).

A GGUF version (and a fine-tune of one) is counted with the vocabulary of its own file, loaded by
llama.cpp alone (``vocab_only``: a tenth of a second, no weights); a transformers folder with its
``tokenizer.json``. The worker counts the whole prompt again with its tokenizer and the chat
template, and refuses a prompt over the context there too; the two counts of the same text agree
to within a few tokens in ten thousand (84,780 against 84,768 on three copies of the README).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from apps.core.sources import local_folder
from apps.inference.protocol import ModelSpec

_lock = threading.Lock()


def token_count(spec: ModelSpec, text: str) -> int | None:
    """How many tokens ``text`` is, as plain text, in ``spec``'s vocabulary; None when this
    process cannot read that vocabulary (a hub model, or weights on the workers' disks only)."""
    counter = _counter(spec)
    return None if counter is None else counter(text)


def _counter(spec: ModelSpec) -> Any:
    if spec.source_kind == "adapter" and spec.base is not None and not _is_gguf(spec):
        spec = spec.base  # a torch adapter reads its base's vocabulary
    if _is_gguf(spec):
        from apps.inference.engines.gguf import gguf_file

        try:
            return _llama_counter(gguf_file(spec))
        except (FileNotFoundError, RuntimeError):
            return None
    if spec.source_kind == "local":
        path = local_folder(spec.source) / "tokenizer.json"
        return _tokenizers_counter(path) if path.is_file() else None
    return None


def _is_gguf(spec: ModelSpec) -> bool:
    root = spec.base if spec.source_kind == "adapter" and spec.base is not None else spec
    if root.is_gguf:
        return True
    # A full fine-tune of a GGUF model: its folder holds the file written at deployment.
    from apps.inference.engines.gguf_export import MODEL_FILE

    return root.source_kind == "local" and (local_folder(root.source) / MODEL_FILE).is_file()


@lru_cache(maxsize=8)
def _llama_counter(path: Path) -> Any:
    import llama_cpp as llama

    from apps.inference.engines import gguf  # noqa: F401  (routes llama.cpp's log to ours)

    params = llama.llama_model_default_params()
    params.vocab_only = True
    with _lock:
        llama.llama_backend_init()
        model = llama.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise RuntimeError(f"llama.cpp could not read the vocabulary of {path}")
    vocab = llama.llama_model_get_vocab(model)

    def count(text: str) -> int:
        data = text.encode()
        # Given no room for the tokens, llama_tokenize answers minus their number.
        return -int(llama.llama_tokenize(vocab, data, len(data), None, 0, False, False))

    return count


@lru_cache(maxsize=8)
def _tokenizers_counter(path: Path) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(path))

    def count(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return count
