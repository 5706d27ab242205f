"""Shared fixtures: the exported weights, the PyTorch reference, the stages, the pictures."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from common.image import images_in, load_image
from common.paths import PICS_DIR, REPO, WEIGHTS_DIR
from common.weights import load_manifest

PICS = images_in(PICS_DIR)
# Read when numba is first imported, which none of the imports above does: numba's runtime counts its allocations
# (tests/test_prealloc.py). xdist's workers and the tests' subprocesses inherit it.
os.environ["NUMBA_NRT_STATS"] = "1"


def pytest_addoption(parser):
    parser.addoption("--compile-first", action="store_true",
                     help="compile the kernels of every build the tests run before they start (tests/compile_first.py)")


def pytest_sessionstart(session):
    """--compile-first, in the process that runs or hands out the tests (not in xdist's workers)."""
    if not session.config.getoption("compile_first") or hasattr(session.config, "workerinput"):
        return
    from common.target import AVX2_TARGET
    from tests.test_weights_errors import v15_weights_in

    write = session.config.pluginmanager.get_plugin("terminalreporter").write_line
    write("compiling the kernels of every build the tests run, or loading them from the kernel cache:")
    folder = Path(tempfile.mkdtemp(prefix="resnet50-v15-"))
    try:
        for target, args, env in [("native", [str(v15_weights_in(folder))], {}), ("avx2", [], AVX2_TARGET)]:
            process = subprocess.Popen([sys.executable, "-m", "tests.compile_first", target, *args], cwd=REPO,
                                       env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            for line in process.stdout:
                write(f"  {line.rstrip()}")
            errors = process.stderr.read()
            if process.wait() != 0:  # the tests of that build will fail and show why; here only where it stopped
                write(f"  the {target} build stopped: {errors.strip().splitlines()[-1] if errors.strip() else '?'}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return load_manifest(WEIGHTS_DIR)


@pytest.fixture(scope="session")
def images(manifest) -> dict[Path, np.ndarray]:
    return {p: load_image(p, manifest["preprocessing"]) for p in PICS}


@pytest.fixture(scope="session")
def reference():
    from common.reference import Reference

    return Reference(WEIGHTS_DIR)


@pytest.fixture(scope="session")
def reference_logits(reference, images) -> dict[Path, np.ndarray]:
    return {p: reference.forward(x) for p, x in images.items()}
