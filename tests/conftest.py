"""Shared fixtures: the exported weights, the PyTorch reference, the stages, the pictures."""

import os

# Before numba starts: its runtime counts its allocations (tests/test_prealloc.py); xdist's workers inherit it.
os.environ["NUMBA_NRT_STATS"] = "1"

from pathlib import Path  # noqa: E402

import numpy as np
import pytest

from common.image import images_in, load_image
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.weights import load_manifest

PICS = images_in(PICS_DIR)


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
