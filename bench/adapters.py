"""``make bench-adapters``: what serving LoRA fine-tunes on the llama.cpp engine costs in memory.

In one process, through the registry as an inference worker does it (its settings: the weight
type, INFERENCE_MAX_BATCH, INFERENCE_KV_CACHE_MB), this loads the packaged base model, then one
and then five LoRA adapters over it, each answering one request, and records the process's
resident memory (VmRSS) after each, with the KV cache each context holds. The adapters are rank 16
on every projection, as the fine-tuning defaults train them, with random weights written in
peft's format and exported by ``gguf_export`` as a deployment does: their values do not matter
to memory. For comparison, a child process serves one adapter on the torch engine, which merges
it into a copy of the base weights.

Writes bench/results/adapters.json and prints a table.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
ADAPTERS = 5
RANK = 16
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
OUT = ROOT / "bench/results/adapters.json"

import django  # noqa: E402

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from engine import SPEC as BASE  # noqa: E402 (the packaged model, as the bench serves it)

from apps.inference.engines import registry  # noqa: E402
from apps.inference.engines.gguf_export import export_lora  # noqa: E402
from apps.inference.protocol import (  # noqa: E402
    Finished,
    GenerationRequest,
    ModelSpec,
    SamplingParams,
)


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def random_adapter(folder: Path, seed: int) -> Path:
    """A peft LoRA adapter over the packaged model (rank RANK on TARGETS) with random weights."""
    import gguf
    from peft import LoraConfig
    from safetensors.numpy import save_file

    from apps.inference.engines.gguf import gguf_file

    reader = gguf.GGUFReader(gguf_file(BASE))
    shapes = {t.name: tuple(int(n) for n in reversed(t.shape)) for t in reader.tensors}
    blocks = int(reader.get_field("llama.block_count").contents())
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
    rng = np.random.default_rng(seed)
    tensors = {}
    for block in range(blocks):
        for target in TARGETS:
            part = (
                "self_attn" if target.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            )
            module = f"model.layers.{block}.{part}.{target}"
            rows, columns = shapes[names.get_name(f"{module}.weight", try_suffixes=(".weight",))]
            key = f"base_model.model.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.normal(0, 0.02, (RANK, columns)).astype("f4")
            tensors[f"{key}.lora_B.weight"] = rng.normal(0, 0.02, (rows, RANK)).astype("f4")
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    LoraConfig(  # adapter_config.json, as training writes it
        task_type="CAUSAL_LM", r=RANK, lora_alpha=2 * RANK, target_modules=list(TARGETS)
    ).save_pretrained(str(folder))
    export_lora(folder, gguf_file(BASE))
    return folder


def adapter_spec(folder: Path, index: int) -> ModelSpec:
    return ModelSpec(
        key=f"bench-adapter-{index}@1",
        source_kind="adapter",
        source=str(folder),
        context_length=BASE.context_length,
        base=BASE,
    )


def answer(spec: ModelSpec) -> None:
    with registry.lease(spec) as engine:
        engine.wait_loaded(timeout=600)
        request = GenerationRequest(
            request_id=str(uuid.uuid4()),
            params=SamplingParams(temperature=0, max_tokens=16),
            messages=[{"role": "user", "content": "Say hello."}],
        )
        last = list(engine.generate(request))[-1]
        assert isinstance(last, Finished), last


def kv_bytes(spec: ModelSpec) -> int:
    """The KV cache the context serving ``spec`` holds (cells times bytes per cell)."""
    from apps.inference.engines.llamacpp import _kv_bytes_per_cell

    engine = registry.get_engine(spec)
    return engine.cells_per_slot * engine.max_batch * _kv_bytes_per_cell(engine._model)  # type: ignore[attr-defined]


def torch_child(folder: Path) -> None:
    """Serve one adapter on the torch engine in this (child) process and print its RSS."""
    settings.INFERENCE_ENGINE = "transformers"
    before = rss_bytes()
    answer(adapter_spec(folder, 0))
    print(json.dumps({"before": before, "after": rss_bytes()}))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--torch":
        torch_child(Path(sys.argv[2]))
        return
    settings.FINETUNE_OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-adapters-", dir=settings.FINETUNE_OUTPUT_DIR))
    try:
        measure(scratch)
    finally:
        registry.reset()
        shutil.rmtree(scratch, ignore_errors=True)


def measure(scratch: Path) -> None:
    folders = [random_adapter(scratch / f"a{i}", seed=i) for i in range(ADAPTERS)]
    start = rss_bytes()
    answer(BASE)
    rows = [{"loaded": "base model", "rss": rss_bytes(), "kv": kv_bytes(BASE)}]
    for index, folder in enumerate(folders, start=1):
        spec = adapter_spec(folder, index)
        answer(spec)
        rows.append(
            {"loaded": f"base + {index} adapters", "rss": rss_bytes(), "kv": kv_bytes(spec)}
        )
    weights = registry.get_engine(BASE)._shared.bytes  # type: ignore[attr-defined]
    adapter_file = (folders[0] / "adapter.gguf").stat().st_size
    child = subprocess.run(
        [sys.executable, __file__, "--torch", str(folders[0])], capture_output=True, text=True
    )
    if child.returncode:
        raise RuntimeError(f"the torch engine's run failed:\n{child.stderr[-3000:]}")
    torch = json.loads(child.stdout.splitlines()[-1])
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lscpu.splitlines())
    )
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu.get("Model name"),
        "cpu_flags": cpu.get("Flags"),
        "weight_type": settings.INFERENCE_GGUF_TYPE,
        "max_batch": settings.INFERENCE_MAX_BATCH,
        "kv_cache_mb": settings.INFERENCE_KV_CACHE_MB,
        "process_start_rss": start,
        "base_weights": weights,
        "adapter_file": adapter_file,
        "steps": rows,
        "torch_one_adapter": torch,
    }
    OUT.write_text(json.dumps(result, indent=2))
    mb = 1 << 20
    print(
        f"CPU: {result['cpu']}; weights {weights / mb:.0f} MiB, adapter {adapter_file / mb:.1f} MiB"
    )
    print("| loaded | RSS MiB | added MiB | its KV MiB | added minus KV MiB |")
    print("|---|---:|---:|---:|---:|")
    previous = start
    for row in rows:
        added = row["rss"] - previous
        print(
            f"| {row['loaded']} | {row['rss'] / mb:.0f} | {added / mb:.0f} | {row['kv'] / mb:.0f} "
            f"| {(added - row['kv']) / mb:.0f} |"
        )
        previous = row["rss"]
    print(
        f"torch engine, one adapter (merged): {(torch['after'] - torch['before']) / mb:.0f} MiB "
        "added to its process"
    )


if __name__ == "__main__":
    main()
