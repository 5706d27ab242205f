"""Reading the exported weights: ``weights/resnet50/`` holds one ``.npy`` per tensor plus ``manifest.json``.

Every load checks the file against the manifest cheaply (it exists, its size, shape and dtype
match); the sha256 of every file is checked at export and on request (``verify``), because
hashing 100 MB on every run would cost more than some stages' whole inference.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from common.errors import WeightsError
from common.paths import WEIGHTS_DIR

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
RERUN = "run `make weights` again"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(weights_dir: Path = WEIGHTS_DIR) -> dict:
    path = Path(weights_dir) / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{path}: no exported weights; run `make weights` to fetch and export them")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: unreadable manifest ({e}); {RERUN}") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise WeightsError(f"{path}: manifest format {manifest.get('format')!r} is not {MANIFEST_FORMAT}; {RERUN}")
    return manifest


def tensor_path(name: str, weights_dir: Path = WEIGHTS_DIR) -> Path:
    return Path(weights_dir) / f"{name}.npy"


def load_tensor(name: str, manifest: dict, weights_dir: Path = WEIGHTS_DIR) -> np.ndarray:
    """One tensor, in torchvision's layout, checked against the manifest's shape, dtype and size."""
    entry = manifest["tensors"].get(name)
    path = tensor_path(name, weights_dir)
    if entry is None:
        raise WeightsError(f"{path}: tensor {name!r} is not in the manifest; {RERUN}")
    if not path.is_file():
        raise WeightsError(f"{path}: missing; {RERUN}")
    if path.stat().st_size != entry["bytes"]:
        raise WeightsError(f"{path}: {path.stat().st_size} bytes, manifest says {entry['bytes']} "
                           f"(truncated or replaced); {RERUN}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable .npy file ({e}); {RERUN}") from None
    if array.shape != tuple(entry["shape"]) or array.dtype != np.dtype(entry["dtype"]):
        raise WeightsError(f"{path}: shape {array.shape} {array.dtype}, manifest says "
                           f"{tuple(entry['shape'])} {entry['dtype']}; {RERUN}")
    return array


def verify(weights_dir: Path = WEIGHTS_DIR) -> int:
    """Check every tensor file's sha256 against the manifest; returns how many were checked."""
    manifest = load_manifest(weights_dir)
    for name, entry in manifest["tensors"].items():
        load_tensor(name, manifest, weights_dir)
        path = tensor_path(name, weights_dir)
        if sha256_file(path) != entry["sha256"]:
            raise WeightsError(f"{path}: sha256 differs from the manifest (the file was changed); {RERUN}")
    return len(manifest["tensors"])
