"""Time to first answer: from starting a process to the first classified photo, as a user waits for it.

A stage runs its own command line, `python -m stages.<stage> IMAGE --json --warmup 0 --repeat 1`; a peer
runs `python -m bench.peers <peer> IMAGE`, which imports its library, creates its session and runs one
inference. The clock runs from the process start until the JSON answer arrives on stdout, so Python's
start-up, imports, weight loading, kernel compilation or loading and one forward pass are all in it.
A stage runs in .venv, the environment `make run` uses (without the test packages: numba would import
scipy at its start, 0.1-0.3 s), where that exists; a peer in this process's environment, which has them.

- cold: the kernel cache (common.paths.CACHE_DIR, through RESNET_CACHE_DIR) is a new, empty folder, so
  every kernel a stage keeps on disk (stage 5 on) is compiled;
- warm: the same command again, with the cache the cold run left behind.
Stages 1-4 compile at every start, and the peers have no kernel cache (the peers' ONNX file, exported
once, and the int8 peers' quantized models are made before either run and kept in the usual cache folder),
so for them the two runs differ only by the operating system's file cache.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.peers import prepare
from common.paths import CACHE_DIR, REPO
from common.stages import threaded

TIMEOUT_S = 600
RUNTIME_PYTHON = REPO / ".venv" / "bin" / "python"  # the Makefile's VENV


def seconds_to_answer(command: list[str], env: dict) -> float:
    """Seconds from starting `command` until its first JSON answer line; the process must then exit with 0."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    elapsed = None
    for line in process.stdout:
        if elapsed is None and line.startswith("{"):
            elapsed = time.perf_counter() - start
            answer = json.loads(line)
    _, errors = process.communicate(timeout=TIMEOUT_S)
    if process.returncode != 0 or elapsed is None or "top5" not in answer:
        raise RuntimeError(f"{' '.join(command)} failed (exit code {process.returncode}): {errors.strip()[-500:]}")
    return elapsed


def first_answer(row: str, kind: str, image: Path, threads: int) -> dict[str, float]:
    """{"cold": seconds, "warm": seconds} for one row of the benchmark."""
    if kind == "stage":
        python = RUNTIME_PYTHON if RUNTIME_PYTHON.exists() else Path(sys.executable)
        command = [str(python), "-m", f"stages.{row}", str(image), "--json", "--warmup", "0", "--repeat", "1"]
        command += ["--threads", str(threads)] if threaded(row) else []
    else:
        prepare(row)  # the ONNX export or the quantized model: one-offs, made before the clock starts
        command = [sys.executable, "-m", "bench.peers", row, str(image), "--threads", str(threads)]
    with tempfile.TemporaryDirectory(prefix="resnet50-cold-cache-") as empty:
        cache = empty if kind == "stage" else str(CACHE_DIR)
        env = {**os.environ, "RESNET_CACHE_DIR": cache}
        return {"cold": seconds_to_answer(command, env), "warm": seconds_to_answer(command, env)}
