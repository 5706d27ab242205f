"""The kernel cache (common/codegen.py) never costs a wrong answer or a traceback: a damaged cache file, a cache
from another numba version or for another CPU, a cache folder that cannot be written and two processes filling
the same cache at once each end in the right top-5, with one line saying what happened.

Every test here compiles on purpose, so it uses the cheapest stage that keeps kernels on disk: stage 5, the first
to generate them, 45 small kernels, 17 s of compiling where stage 11 takes 44 (Intel Xeon, 2026-12-01). It runs as
a user would start it, on a cache folder of its own (RESNET_CACHE_DIR): one cold run fills a cache, which each test
copies before damaging it. The kernel cache works alike for every stage (common/codegen.py).
"""

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numba
import numpy as np
import pytest

from common import codegen
from common.labels import TOP_K, softmax
from common.paths import PICS_DIR, REPO
from common.stages import STAGES, generated
from common.target import AVX2_TARGET
from tests.test_cli_errors import DROP_READ_OVERRIDE, RUN_TIMEOUT_S
from tests.test_network import PROB_TOLERANCE

STAGE = next(filter(generated, STAGES))
PICTURE = PICS_DIR / "cat.png"
LOADED, COMPILED = "load compiled kernels", "compile "
NOTE = "note: "
CONCURRENT = 2
READ_ONLY = 0o555
# Another CPU, as numba can be told to compile for it: an AVX2 laptop (no AVX-512).
OTHER_CPU = AVX2_TARGET


def classify(cache: Path, env: dict | None = None, prefix: list[str] | tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", f"stages.{STAGE}", str(PICTURE), "--json", "--warmup", "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "RESNET_CACHE_DIR": str(cache), **(env or {})})


def assert_right(result: subprocess.CompletedProcess, reference_logits) -> str:
    """The run answered like the reference, without a traceback; returns its stderr."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    top5 = json.loads(result.stdout.splitlines()[-1])["top5"]
    probs = softmax(reference_logits[PICTURE])
    assert [t["class_id"] for t in top5] == list(np.argsort(-probs)[:TOP_K])
    assert all(abs(t["prob"] - probs[t["class_id"]]) <= PROB_TOLERANCE for t in top5)
    return result.stderr


def notes(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(NOTE)]


@pytest.fixture(scope="module")
def filled_cache(tmp_path_factory, reference_logits) -> Path:
    """A cache folder after one cold run (every kernel compiled) and one warm run (every kernel loaded)."""
    cache = tmp_path_factory.mktemp("filled") / "cache"
    assert COMPILED in assert_right(classify(cache), reference_logits)
    warm = assert_right(classify(cache), reference_logits)
    assert LOADED in warm and not notes(warm)
    return cache


@pytest.fixture
def cache(filled_cache, tmp_path) -> Path:
    """A copy of the filled cache, for one test to damage."""
    return Path(shutil.copytree(filled_cache, tmp_path / "cache"))


def cache_files(cache: Path, suffix: str) -> list[Path]:
    files = sorted((cache / "kernels" / "__pycache__").glob(f"{STAGE}_*{suffix}"))
    assert files, f"no {suffix} files in {cache}"
    return files


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated data", "garbage data", "garbage index", "empty index"])
def test_damaged_cache_file_is_compiled_again(cache, damage, reference_logits):
    data, index = cache_files(cache, ".nbc")[0], cache_files(cache, ".nbi")[0]
    target = {"truncated data": data, "garbage data": data, "garbage index": index, "empty index": index}[damage]
    original = target.read_bytes()
    target.write_bytes({"truncated data": original[: len(original) // 2], "garbage data": b"\x00garbage" * 64,
                        "garbage index": b"not a pickle", "empty index": b""}[damage])
    stderr = assert_right(classify(cache), reference_logits)
    assert len(notes(stderr)) == 1 and "could not be read" in notes(stderr)[0], stderr
    assert COMPILED in stderr  # the header line says that kernels were compiled
    again = assert_right(classify(cache), reference_logits)
    assert LOADED in again and not notes(again), "the damaged file was not replaced"


@pytest.mark.slow
def test_cache_of_another_numba_version_is_not_used(cache, reference_logits):
    """numba's index starts with the version that wrote it; another version's entries are ignored (one kernel's
    index is enough to show it: each kernel has its own)."""
    index = cache_files(cache, ".nbi")[0]
    original = index.read_bytes()
    version = numba.__version__.encode()
    assert version in original
    index.write_bytes(original.replace(version, b"0.0.0"[: len(version)].ljust(len(version), b"0"), 1))
    stderr = assert_right(classify(cache), reference_logits)
    assert COMPILED in stderr and not notes(stderr)


@pytest.mark.slow
def test_cache_for_another_cpu_is_not_used(cache, reference_logits):
    """Compiled for another CPU (the digest in the file name changes with the target), then native again:
    each build compiles its own kernels and the native ones are still loaded afterwards."""
    native = set(cache_files(cache, ".nbi"))
    stderr = assert_right(classify(cache, env=OTHER_CPU), reference_logits)
    assert COMPILED in stderr and not notes(stderr)
    assert set(cache_files(cache, ".nbi")) > native, "the other CPU's kernels should sit beside the native ones"
    assert LOADED in assert_right(classify(cache), reference_logits)


@pytest.mark.slow
def test_unwritable_cache_folder_runs_without_cache(cache, reference_logits):
    """A kernel cache folder the user cannot write (root without the capability to override permissions). The
    prepared weights beside it stay writable: a run marks the entry it maps as used (common/prepared.py)."""
    kernels = cache / "kernels"
    before = {p: p.stat().st_mtime for p in kernels.rglob("*")}
    for folder in (kernels, kernels / "__pycache__"):
        folder.chmod(READ_ONLY)
    try:
        # A new compile setting, so that nothing in the cache fits and everything must be compiled.
        stderr = assert_right(classify(cache, env={"NUMBA_OPT": "2"}, prefix=DROP_READ_OVERRIDE), reference_logits)
    finally:
        for folder in (kernels, kernels / "__pycache__"):
            folder.chmod(0o755)
    assert len(notes(stderr)) == 1 and "cannot be written" in notes(stderr)[0], stderr
    assert {p: p.stat().st_mtime for p in kernels.rglob("*")} == before, "the read-only kernel cache was changed"


@pytest.mark.slow
def test_cache_path_that_is_a_file_runs_without_cache(tmp_path, reference_logits):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    stderr = assert_right(classify(blocker / "cache"), reference_logits)
    assert len(notes(stderr)) == 1 and "cannot be written" in notes(stderr)[0], stderr


@pytest.mark.slow
def test_two_processes_fill_an_empty_cache_at_once(tmp_path, reference_logits):
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(CONCURRENT) as pool:
        results = list(pool.map(lambda _: classify(cache), range(CONCURRENT)))
    for result in results:
        assert_right(result, reference_logits)
    assert LOADED in assert_right(classify(cache), reference_logits)


def test_digest_changes_with_everything_that_changes_machine_code(monkeypatch, tmp_path):
    generator = tmp_path / "model.py"
    generator.write_text("# a generator\n")
    base = codegen.digest("source", generator)
    assert codegen.digest("source", generator) == base
    assert codegen.digest("other source", generator) != base
    generator.write_text("# a changed generator, or an intrinsic in it\n")
    assert codegen.digest("source", generator) != base
    generator.write_text("# a generator\n")
    shared = tmp_path / "intrinsics.py"  # a module of intrinsics the stage's kernels import
    shared.write_text("# an intrinsic\n")
    monkeypatch.setattr(codegen, "SHARED_GENERATORS", (shared,))
    base = codegen.digest("source", generator)
    shared.write_text("# a changed intrinsic\n")
    assert codegen.digest("source", generator) != base
    shared.write_text("# an intrinsic\n")
    for setting in ("SLP_VECTORIZE", "LOOP_VECTORIZE", "OPT", "NUMBA_NUM_THREADS"):
        with monkeypatch.context() as m:
            m.setattr(numba.config, setting, f"not {getattr(numba.config, setting)}")
            assert codegen.digest("source", generator) != base, setting
    with monkeypatch.context() as m:
        m.setattr(numba, "__version__", "0.0.0")
        assert codegen.digest("source", generator) != base
    with monkeypatch.context() as m:
        m.setattr(codegen, "numba_target", lambda: ("x86_64-unknown-linux-gnu", "haswell", "+avx2,+fma"))
        assert codegen.digest("source", generator) != base
