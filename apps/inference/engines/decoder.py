"""Forward passes for many sequences at once, over a KV cache with one row per sequence.

Two decoders share one interface (``prefill`` a new row, ``decode`` one token for every row,
``move`` a row, ``release`` memory):

- ``LlamaDecoder``, for Llama-architecture models (SmolLM2 among them): the weights are re-laid
  once at load (query/key/value and gate/up fused into one matrix each) and, on a CPU with fbgemm,
  packed as float16 for fbgemm's fp16-weight GEMM, which reads half the bytes of float32 and, unlike
  torch's float32 and bfloat16 kernels on this AVX2 CPU, stays fast from 1 to 32 rows (measured: a
  full set of SmolLM2's matrices takes 18 ms at 1 row and 62 ms at 16, against 44 and 96 ms in
  float32 and 21 and 290 ms in bfloat16). The forward is written out in a dozen tensor operations
  per layer, where transformers' generic one spends as much time in Python as in the matrices.
- ``EagerDecoder`` for any other architecture: transformers' own forward, one row after another.
  It shares the scheduler (joins, leaves, streaming, cancellation) without the speed of batching.

Rows are kept compact (rows ``0..n-1`` are in use): the scheduler moves the last row into a freed
one. Row ``i`` holds positions ``0..length-1`` of its sequence; a decode step writes each row's new
key and value at that row's own position and masks what lies beyond it.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torch.nn.functional as F

from apps.core.errors import quoted

logger = logging.getLogger(__name__)

# Cache capacity grows in these steps, so a step rarely reallocates.
_ROW_STEP = 4
_POSITION_STEP = 256
# A product smaller than this (multiply-adds) runs on one core: handing half of it to the other
# costs about as much as it saves (measured: tens of microseconds per hand-off).
_SPLIT_MIN_MACS = 4_000_000


def _rounded(rows: int, positions: int) -> tuple[int, int]:
    """The cache size that holds ``rows`` rows of ``positions`` positions."""
    return -(-rows // _ROW_STEP) * _ROW_STEP, -(-positions // _POSITION_STEP) * _POSITION_STEP


def fbgemm_fp16_available() -> bool:
    """Whether this torch build and CPU run fbgemm's fp16-weight GEMM (checked on a small one)."""
    if not hasattr(torch, "fbgemm_linear_fp16_weight"):
        return False
    try:
        # torch marks these entry points deprecated (in favour of torchao) but ships them, and
        # warns once per process: here. Without them this CPU has no fast float16-weight GEMM.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            weight = torch.randn(8, 16)
            packed = torch.fbgemm_pack_gemm_matrix_fp16(weight)
            out = torch.fbgemm_linear_fp16_weight(torch.ones(2, 16), packed, torch.zeros(8))
    except (RuntimeError, AttributeError):
        return False
    return bool(torch.allclose(out[0], weight.sum(1), atol=1e-1))


class CoreSplit:
    """Runs the parts of a matrix product on ``cores`` threads at once, one on the caller's.

    fbgemm's fp16 GEMM is single-threaded inside torch, so without this all cores but one would
    sit idle (torch's own threads only spin-wait there, taking the cores from everything else).
    """

    def __init__(self, cores: int) -> None:
        self.cores = cores
        self._pool = ThreadPoolExecutor(max_workers=cores - 1, thread_name_prefix="engine-core")

    def run(self, parts: list[Callable[[], torch.Tensor]]) -> list[torch.Tensor]:
        later = [self._pool.submit(part) for part in parts[1:]]
        return [parts[0](), *(future.result() for future in later)]


class Linear:
    """``y = x @ W.T`` with the weight stored the way this device multiplies it fastest.

    With a ``split``, fbgemm weights are packed as one slice of the output features per core, and
    larger products run on all of them at once.
    """

    def __init__(self, weight: torch.Tensor, *, mode: str, split: CoreSplit | None = None) -> None:
        self.mode = mode
        self.out_features = weight.shape[0]
        self.split = split if mode == "fbgemm-fp16" and weight.shape[0] >= 64 else None
        if mode == "fbgemm-fp16":
            weight = weight.float().contiguous()
            slices = weight.chunk(self.split.cores) if self.split else (weight,)
            self.packed = [torch.fbgemm_pack_gemm_matrix_fp16(w.contiguous()) for w in slices]
            self.biases = [torch.zeros(w.shape[0]) for w in slices]
        else:
            self.weight = weight.contiguous()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "fbgemm-fp16":
            # bfloat16 weights on a CPU take bfloat16 inputs; the activations stay float32.
            return F.linear(x.to(self.weight.dtype), self.weight).to(x.dtype)
        flat = x.reshape(-1, x.shape[-1])
        parts: list[Callable[[], torch.Tensor]] = [
            functools.partial(torch.fbgemm_linear_fp16_weight, flat, packed, bias)
            for packed, bias in zip(self.packed, self.biases, strict=True)
        ]
        if len(parts) == 1:
            out = parts[0]()
        elif self.split and flat.shape[0] * self.out_features * flat.shape[1] >= _SPLIT_MIN_MACS:
            out = torch.cat(self.split.run(parts), dim=-1)
        else:  # too small to pay for handing slices to the other cores
            out = torch.cat([part() for part in parts], dim=-1)
        return out.view(*x.shape[:-1], self.out_features)


def llama_unsupported(model: Any) -> str | None:
    """Why ``LlamaDecoder`` cannot run ``model`` (None when it can)."""
    config = model.config
    if config.model_type != "llama":
        return f"architecture {quoted(config.model_type)}"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "biases in attention or MLP"
    if config.hidden_act != "silu":
        return f"activation {quoted(config.hidden_act)}"
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") not in ("default", "linear", "llama3"):
        return f"rope type {quoted(rope.get('rope_type'))} depends on the sequence length"
    return None


class LlamaDecoder:
    """Llama-architecture decoding over a row-per-sequence KV cache (see the module docstring).

    ``model`` is a transformers ``LlamaForCausalLM`` in float32 (CPU) or the serving dtype (GPU);
    only its weights are kept, so the caller may drop it afterwards.
    """

    def __init__(
        self,
        model: Any,
        *,
        max_positions: int,
        device: torch.device,
        mode: str,
        cores: int = 1,
    ) -> None:
        config = model.config
        self.device = device
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_heads
        self.hidden = config.hidden_size
        self.eps = config.rms_norm_eps
        # On the CPU the activations and the cache are float32 whatever the weights are stored as.
        self.dtype = torch.float32 if device.type == "cpu" else model.dtype
        weight_dtype = torch.bfloat16 if mode == "bfloat16" else self.dtype

        split = CoreSplit(cores) if cores >= 2 and mode == "fbgemm-fp16" else None

        def linear(*parts: torch.Tensor) -> Linear:
            weight = torch.cat([p.detach() for p in parts]).to(weight_dtype)
            return Linear(weight, mode=mode, split=split)

        inner = model.model
        self.embed = inner.embed_tokens.weight.detach().to(self.dtype)
        self.layers = []
        for layer in inner.layers:
            attention, mlp = layer.self_attn, layer.mlp
            self.layers.append(
                (
                    layer.input_layernorm.weight.detach().to(self.dtype),
                    linear(
                        attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight
                    ),
                    linear(attention.o_proj.weight),
                    layer.post_attention_layernorm.weight.detach().to(self.dtype),
                    linear(mlp.gate_proj.weight, mlp.up_proj.weight),
                    linear(mlp.down_proj.weight),
                )
            )
        self.norm = inner.norm.weight.detach().to(self.dtype)
        self.lm_head = linear(model.lm_head.weight)
        # transformers' own rotary module computes the angles, so every static rope type matches.
        with torch.no_grad():
            positions = torch.arange(max_positions, device=device)[None]
            probe = torch.zeros(1, device=device, dtype=torch.float32)
            cos, sin = inner.rotary_emb(probe, positions)
        self.cos, self.sin = cos[0].to(self.dtype), sin[0].to(self.dtype)
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def kv_bytes_per_token(self) -> int:
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        return 2 * len(self.layers) * self.n_kv * self.head_dim * itemsize

    def cache_bytes(self, rows: int, positions: int) -> int:
        """What ``reserve(rows, positions)`` allocates."""
        rows, positions = _rounded(rows, positions)
        return rows * positions * self.kv_bytes_per_token

    # -- the cache -------------------------------------------------------------------------
    def reserve(self, rows: int, positions: int) -> None:
        """Size the cache for ``rows`` rows of ``positions`` positions (rounded up a little),
        keeping what rows ``0..rows-1`` hold. It grows when it must and shrinks when it holds over
        twice what is asked, so its size follows the scheduler's budget check. While it is resized
        the old and the new cache exist together."""
        cap_rows = 0 if self.k is None else self.k.shape[1]
        cap_positions = 0 if self.k is None else self.k.shape[3]
        new_rows, new_positions = _rounded(rows, positions)
        fits = rows <= cap_rows and positions <= cap_positions
        if fits and cap_rows * cap_positions <= 2 * new_rows * new_positions:
            return
        shape = (len(self.layers), new_rows, self.n_kv, new_positions, self.head_dim)
        k = torch.zeros(shape, dtype=self.dtype, device=self.device)
        v = torch.zeros(shape, dtype=self.dtype, device=self.device)
        if self.k is not None and self.v is not None:
            keep_rows, keep = min(cap_rows, new_rows), min(cap_positions, new_positions)
            k[:, :keep_rows, :, :keep] = self.k[:, :keep_rows, :, :keep]
            v[:, :keep_rows, :, :keep] = self.v[:, :keep_rows, :, :keep]
        self.k, self.v = k, v

    def _check_room(self, rows: int, positions: int) -> None:
        if self.k is None or rows > self.k.shape[1] or positions > self.k.shape[3]:
            raise RuntimeError("the KV cache was not reserved for this step")

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` positions into row ``target``."""
        assert self.k is not None and self.v is not None
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]

    def release(self) -> None:
        """Free the cache (no rows in use)."""
        self.k = self.v = None

    # -- forward passes --------------------------------------------------------------------
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # transformers' LlamaRMSNorm, op for op (F.rms_norm measured 3x slower per call here).
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))

    def _attention_inputs(
        self, fused: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values (``[b, heads, t, head_dim]``) from the fused projection
        ``[b, t, ...]``, with the rotary embedding applied to queries and keys in one pass."""
        b, t = fused.shape[:2]
        heads = self.n_heads + self.n_kv
        qk = fused[..., : heads * self.head_dim].view(b, t, heads, self.head_dim)
        half = self.head_dim // 2
        qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
        v = fused[..., heads * self.head_dim :].view(b, t, self.n_kv, self.head_dim)
        q, k = qk[:, :, : self.n_heads], qk[:, :, self.n_heads :]
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _mlp(
        self, x: torch.Tensor, norm: torch.Tensor, gate_up: Linear, down: Linear
    ) -> torch.Tensor:
        gate, up = gate_up(self._norm(x, norm)).chunk(2, dim=-1)
        return down(F.silu(gate) * up)

    def prefill(self, row: int, ids: list[int]) -> torch.Tensor:
        """Run the prompt ``ids`` into row ``row`` (positions ``0..len(ids)-1``); return the
        logits (float32) that follow it."""
        return self.prefill_many([row], [ids])[0]

    def prefill_many(
        self, rows: list[int], prompts: list[list[int]], *, every: bool = False
    ) -> torch.Tensor:
        """Prefill several prompts in one pass, each into its own row: the projections run as one
        product over all their tokens, attention per prompt. Returns ``[len(rows), vocab]``, the
        logits after each prompt; with ``every``, ``[tokens, vocab]``, after each of its tokens
        (the prompts one after another)."""
        lengths = [len(ids) for ids in prompts]
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        self._check_room(max(rows) + 1, max(lengths))
        assert self.k is not None and self.v is not None
        flat = torch.tensor([t for ids in prompts for t in ids], device=self.device)
        where = torch.cat([torch.arange(n, device=self.device) for n in lengths])
        x = self.embed[flat][None]  # [1, tokens, hidden]
        cos, sin = self.cos[where][None, :, None], self.sin[where][None, :, None]
        for index, (norm_in, qkv, out, norm_post, gate_up, down) in enumerate(self.layers):
            q, k, v = self._attention_inputs(qkv(self._norm(x, norm_in)), cos, sin)
            attended = []
            for row, start, n in zip(rows, starts, lengths, strict=True):
                span = slice(start, start + n)
                self.k[index, row, :, :n] = k[0, :, span]
                self.v[index, row, :, :n] = v[0, :, span]
                attended.append(
                    F.scaled_dot_product_attention(
                        q[:, :, span], k[:, :, span], v[:, :, span], is_causal=True, enable_gqa=True
                    )
                )
            joined = torch.cat(attended, dim=2) if len(attended) > 1 else attended[0]
            x = x + out(joined.transpose(1, 2).reshape(1, len(flat), -1))
            x = x + self._mlp(x, norm_post, gate_up, down)
        last = (
            x[0]
            if every
            else x[0, [start + n - 1 for start, n in zip(starts, lengths, strict=True)]]
        )
        return self.lm_head(self._norm(last, self.norm)).float()

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One step for rows ``0..len(tokens)-1``: row ``i`` takes ``tokens[i]`` at position
        ``positions[i]``. Returns the next-token logits, ``[rows, vocab]`` float32."""
        b = len(tokens)
        longest = max(positions) + 1
        self._check_room(b, longest)
        assert self.k is not None and self.v is not None
        where = torch.tensor(positions, device=self.device)
        rows = torch.arange(b, device=self.device)
        x = self.embed[torch.tensor(tokens, device=self.device)][:, None]  # [b, 1, hidden]
        cos, sin = self.cos[where][:, None, None], self.sin[where][:, None, None]  # [b, 1, 1, dim]
        mask = None
        if min(positions) != max(positions):
            span = torch.arange(longest, device=self.device)
            mask = (span[None, :] <= where[:, None])[:, None, None]  # [b, 1, 1, longest]
        for index, (norm_in, qkv, out, norm_post, gate_up, down) in enumerate(self.layers):
            q, k, v = self._attention_inputs(qkv(self._norm(x, norm_in)), cos, sin)
            self.k[index, rows, :, where] = k[:, :, 0]
            self.v[index, rows, :, where] = v[:, :, 0]
            attended = F.scaled_dot_product_attention(
                q,
                self.k[index, :b, :, :longest],
                self.v[index, :b, :, :longest],
                attn_mask=mask,
                enable_gqa=True,
            )
            x = x + out(attended.transpose(1, 2).reshape(b, 1, -1))
            x = x + self._mlp(x, norm_post, gate_up, down)
        return self.lm_head(self._norm(x[:, 0], self.norm)).float()


class EagerDecoder:
    """transformers' own forward, one sequence at a time, for architectures ``LlamaDecoder``
    does not cover. Same interface; each row keeps its own ``DynamicCache``."""

    def __init__(self, model: Any, *, device: torch.device) -> None:
        self.model = model
        self.device = device
        self.caches: dict[int, Any] = {}
        itemsize = torch.empty(0, dtype=model.dtype).element_size()
        config = model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = (
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.kv_bytes_per_token = 2 * config.num_hidden_layers * heads * head_dim * itemsize

    def cache_bytes(self, rows: int, positions: int) -> int:
        return rows * positions * self.kv_bytes_per_token

    def _forward(self, row: int, ids: list[int], *, every: bool = False) -> torch.Tensor:
        output = self.model(
            input_ids=torch.tensor([ids], device=self.device),
            cache=self.caches[row],
            use_cache=True,
        )
        return (output.logits[0] if every else output.logits[0, -1]).float()

    def prefill(self, row: int, ids: list[int], *, every: bool = False) -> torch.Tensor:
        from transformers import DynamicCache

        self.caches[row] = DynamicCache(config=self.model.config)
        return self._forward(row, ids, every=every)

    def prefill_many(
        self, rows: list[int], prompts: list[list[int]], *, every: bool = False
    ) -> torch.Tensor:
        pairs = zip(rows, prompts, strict=True)
        if every:
            return torch.cat([self.prefill(row, ids, every=True) for row, ids in pairs])
        return torch.stack([self.prefill(row, ids) for row, ids in pairs])

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        return torch.stack([self._forward(row, [token]) for row, token in enumerate(tokens)])

    def reserve(self, rows: int, positions: int) -> None:
        """Each row's cache grows by itself; rows past ``rows`` are dropped."""
        for row in [r for r in self.caches if r >= rows]:
            del self.caches[row]

    def move(self, source: int, target: int, length: int) -> None:
        self.caches[target] = self.caches.pop(source)

    def release(self) -> None:
        self.caches.clear()
