"""Reading the exported weights: ``weights/resnet50/`` holds one ``.npy`` per tensor plus ``manifest.json``.

Every load checks the file against the manifest cheaply (it exists, its size, shape and dtype
match); the sha256 of every file is checked at export and on request (``verify``, the stages'
``--verify-weights``, ``python -m common.weights``), because hashing 100 MB on every run would cost
more than some stages' whole inference.

What the stages do with the tensors, taught where it is introduced and imported from here after: `load_tensors`,
stage 3's pool (every weight read once, before inference, conv weights in the OHWI layout its kernels read), for
stages 4-6; `fold_batch_norm`, stage 7's batch norm folded into its conv, and `folded_pool`, stage 7's pool of
folded convs, for stages 8-15.
"""

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from common.architecture import NUM_CLASSES, VARIANTS, resnet50, tensor_shapes
from common.errors import WeightsError
from common.paths import WEIGHTS_DIR

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
MANIFEST_KEYS = ("source", "variant", "bn_eps", "preprocessing", "labels", "tensors")
PREPROCESSING_KEYS = ("resize_shorter_side", "center_crop", "channel_order", "scale", "mean", "std")
TENSOR_KEYS = {"shape", "dtype", "bytes", "sha256"}
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
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise WeightsError(f"{path}: manifest format {found!r} is not {MANIFEST_FORMAT}; {RERUN}")
    problem = manifest_problem(manifest)
    if problem:
        raise WeightsError(f"{path}: {problem}; {RERUN}")
    return manifest


def manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest unusable, or None. Everything a stage takes from it is checked here, so that a
    manifest from another variant or source is followed as written, and a damaged one is reported."""
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        return f"manifest lacks {', '.join(missing)}"
    if manifest["variant"] not in VARIANTS:
        return f"variant {manifest['variant']!r} is not one of {', '.join(VARIANTS)}"
    missing = [key for key in PREPROCESSING_KEYS if key not in manifest["preprocessing"]]
    if missing:
        return f"preprocessing lacks {', '.join(missing)}"
    if len(manifest["labels"]) != NUM_CLASSES:
        return f"{len(manifest['labels'])} labels, not {NUM_CLASSES}"
    expected = tensor_shapes(resnet50(manifest["variant"]))
    listed = {name: tuple(entry.get("shape", ())) for name, entry in manifest["tensors"].items()}
    wrong = sorted(name for name in expected.keys() | listed.keys() if expected.get(name) != listed.get(name))
    if wrong:
        return f"tensors {', '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''} do not match ResNet-50's"
    incomplete = sorted(name for name, entry in manifest["tensors"].items() if not TENSOR_KEYS <= entry.keys())
    if incomplete:
        return f"tensor entry {incomplete[0]} lacks one of {', '.join(sorted(TENSOR_KEYS))}"
    return None


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


def load_tensors(manifest, weights_dir):
    """Every tensor by name, in the layout the kernels want: conv weights OHWI, the rest as exported."""
    pool = {}
    for name in manifest["tensors"]:
        tensor = load_tensor(name, manifest, weights_dir)
        if tensor.ndim == 4:
            tensor = np.ascontiguousarray(tensor.transpose(0, 2, 3, 1))  # OIHW -> OHWI
        pool[name] = tensor
    return pool


def fold_batch_norm(conv, tensors, eps) -> tuple[np.ndarray, np.ndarray]:
    """OIHW conv weight and its batch norm -> (weight with the batch norm's scale in it, bias (out,)), in float64:
    a stage rounds them once, to its precision, so folding adds no error of its own. `tensors(name)` reads one."""
    weight = tensors(f"{conv.name}.weight").astype(np.float64)
    gamma, beta, mean, var = (tensors(f"{conv.bn}.{part}").astype(np.float64)
                              for part in ("weight", "bias", "running_mean", "running_var"))
    scale = gamma / np.sqrt(var + eps)
    return weight * scale[:, None, None, None], beta - mean * scale  # OIHW


def folded_pool(manifest, weights_dir, fold, fold_fc=lambda weight, bias: (weight, bias),
                architecture=resnet50) -> dict:
    """Every conv of architecture(variant) (the network as the stage computes it) as fold(conv, tensors, eps) by conv
    name, and "fc" as fold_fc(weight, bias) (as exported, by default)."""
    def tensors(name):
        return load_tensor(name, manifest, weights_dir)

    pool = {conv.name: fold(conv, tensors, manifest["bn_eps"]) for conv in architecture(manifest["variant"]).convs}
    pool["fc"] = fold_fc(tensors("fc.weight"), tensors("fc.bias"))
    return pool


def verify(weights_dir: Path = WEIGHTS_DIR) -> int:
    """Check every tensor file's sha256 against the manifest; returns how many were checked."""
    manifest = load_manifest(weights_dir)
    for name, entry in manifest["tensors"].items():
        load_tensor(name, manifest, weights_dir)
        path = tensor_path(name, weights_dir)
        if sha256_file(path) != entry["sha256"]:
            raise WeightsError(f"{path}: sha256 differs from the manifest (the file was changed); {RERUN}")
    return len(manifest["tensors"])


def main(argv: list[str] | None = None) -> int:
    """`make verify-weights`: hash every weight file and compare with the manifest."""
    parser = argparse.ArgumentParser(prog="python -m common.weights",
                                     description="Check every exported weight file's sha256 against the manifest.")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, metavar="DIR",
                        help="exported weights (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        count = verify(args.weights)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.weights}: {count} weight files match the manifest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
