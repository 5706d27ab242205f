"""Shared fixtures: the exported weights, the PyTorch reference, the stages, the pictures."""

import importlib
from pathlib import Path

import numpy as np
import pytest

from common.image import IMAGE_SUFFIXES, load_image
from common.paths import PICS_DIR, REPO, WEIGHTS_DIR
from common.weights import load_manifest

# Every stage folder is tested: a new stage is covered by existing, not by editing this list.
STAGES = sorted(p.name for p in (REPO / "stages").glob("stage[0-9]*_*") if (p / "model.py").is_file())
PICS = sorted(p for p in PICS_DIR.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def stage_module(stage: str):
    return importlib.import_module(f"stages.{stage}.model")


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
