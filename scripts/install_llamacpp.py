"""Install llama-cpp-python, building llama.cpp for this machine's CPU once.

llama.cpp's own native detection (-march=native) also turns on AMX, whose tile instructions
fault on these virtual machines (an illegal instruction inside ggml's AMX matmul, with the
permission to use AMX granted), so the instruction sets are named from the CPU's flags instead,
every one but AMX. The built wheel is kept under ``~/.cache/playground/llama-wheels/<key>``, the
key being the build's CMake arguments: pip's own wheel cache is keyed by the package version
alone, and would hand a wheel built for one CPU to a machine whose CPU lacks its instructions.

Usage: ``python scripts/install_llamacpp.py`` with the virtual environment's Python. Extra CMake
arguments come from ``CMAKE_ARGS`` (``-DGGML_CUDA=on`` for a GPU worker).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from pathlib import Path

VERSION = "0.3.36"  # pinned in pyproject.toml too
# Only the library is used: no tools, examples, tests, server or multimodal projector.
BASE = [
    "-DLLAVA_BUILD=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
]
# ggml's CMake option for each x86 feature, by the flag /proc/cpuinfo shows for it.
FEATURES = {
    "GGML_SSE42": "sse4_2",
    "GGML_AVX": "avx",
    "GGML_AVX2": "avx2",
    "GGML_FMA": "fma",
    "GGML_F16C": "f16c",
    "GGML_BMI2": "bmi2",
    "GGML_AVX_VNNI": "avx_vnni",
    "GGML_AVX512": "avx512f",
    "GGML_AVX512_VBMI": "avx512vbmi",
    "GGML_AVX512_VNNI": "avx512_vnni",
    "GGML_AVX512_BF16": "avx512_bf16",
}


def cpu_arguments() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() not in ("x86_64", "AMD64") or not cpuinfo.exists():
        return ["-DGGML_NATIVE=ON"]  # elsewhere llama.cpp's own detection is right
    lines = cpuinfo.read_text().splitlines()
    line = next((row for row in lines if row.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    options = ["-DGGML_NATIVE=OFF", "-DGGML_AMX_TILE=OFF", "-DGGML_AMX_INT8=OFF"]
    options.append("-DGGML_AMX_BF16=OFF")
    options += [f"-D{name}={'ON' if flag in flags else 'OFF'}" for name, flag in FEATURES.items()]
    return options


def main() -> None:
    arguments = " ".join([*BASE, *cpu_arguments(), os.environ.get("CMAKE_ARGS", "")]).strip()
    key = hashlib.sha256(f"{VERSION} {arguments}".encode()).hexdigest()[:16]
    folder = Path.home() / ".cache" / "playground" / "llama-wheels" / key
    pip = [sys.executable, "-m", "pip"]
    wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    if not wheels:
        print(f"building llama.cpp ({arguments}); about 10 minutes on 2 cores", flush=True)
        subprocess.run(
            [*pip, "wheel", "-q", "--no-deps", "--no-cache-dir", "-w", str(folder)]
            + [f"llama-cpp-python=={VERSION}"],
            check=True,
            env={**os.environ, "CMAKE_ARGS": arguments},
        )
        wheels = sorted(folder.glob("llama_cpp_python-*.whl"))
    # This build, even over one of the same version; its Python dependencies come with the
    # project's install that follows.
    install = [*pip, "install", "-q", "--force-reinstall", "--no-deps", str(wheels[-1])]
    subprocess.run(install, check=True)


if __name__ == "__main__":
    main()
