"""Shared fixtures: the exported weights, the PyTorch reference, the stages, the pictures."""

from pathlib import Path

import numpy as np
import pytest

from common.image import IMAGE_SUFFIXES, load_image
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.stages import STAGES, stage_module  # noqa: F401 - re-exported for the tests
from common.weights import load_manifest

# Every stage folder is tested (common.stages.STAGES): a new stage is covered by existing.
PICS = sorted(p for p in PICS_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


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
