"""Stage 13's int8 pieces, each against plain numpy: vpdpbusd through the intrinsic against the plain integer fallback,
the weight codes and their packing, the photo's codes, and the calibration file (measured once, measured again when
damaged, a clear error where it cannot be measured). The whole network against the reference is in
tests/test_network.py (top-1 identical, 4 of the top 5), its AVX2 build, which runs the fallback, in
tests/test_portable_tiles.py.
"""

import json
import os
import subprocess
import sys

import numba
import numpy as np
import pytest

from common import calibration, tiles
from common.architecture import resnet50
from common.paths import REPO, WEIGHTS_DIR
from common.stages import STAGES, precision, stage_module
from common.weights import load_manifest, load_tensor
from tests.test_cli_errors import DROP_READ_OVERRIDE

STAGE = next(stage for stage in STAGES if precision(stage) == "int8")
model = stage_module(STAGE)
CHANNEL_QUADS = 24  # input channels / 4 in the toy dot products
SEED = 13
READ_ONLY = 0o555


def toy_sums(dot):
    """A tile's worth of dot_quads calls, as the conv kernel makes them: one pixel's quads against BLOCK channels."""
    block = 2 * model.LANES

    @numba.njit
    def run(quads, weight, out):
        sums = model.stack_ints(32)
        for i in range(32):
            sums[i] = 0
        for q in range(quads.size):
            for v in range(0, block, model.LANES):
                dot(sums, v, quads[q], weight, q * block + v)
        for i in range(block):
            out[i] = sums[i]

    return run, block


def random_codes(block):
    rng = np.random.default_rng(SEED)
    x = rng.integers(0, model.U8_MAX + 1, (CHANNEL_QUADS, model.QUAD), dtype=np.uint8)  # u8 codes, 4 a quad
    w = rng.integers(-model.INT8_MAX, model.INT8_MAX + 1, (CHANNEL_QUADS, block, model.QUAD), dtype=np.int8)
    expected = np.einsum("qj,qoj->o", x.astype(np.int64), w.astype(np.int64))
    return x.view(np.int32).reshape(-1), w.view(np.int32).reshape(-1), expected


VNNI_ONLY = pytest.mark.skipif(not model.HAS_VNNI, reason="this CPU has no VNNI (the plain fallback is tested)")


@pytest.mark.parametrize("dot", [model.plain_quads, pytest.param(model.vnni_quads, marks=VNNI_ONLY)],
                         ids=["plain", "vpdpbusd"])
def test_dot_quads_sum_the_products_of_the_codes(dot):
    run, block = toy_sums(dot)
    quads, weight, expected = random_codes(block)
    out = np.empty(block, np.int32)
    run(quads, weight, out)
    assert np.array_equal(out, expected)
    if dot is model.vnni_quads:  # the instruction itself, not something LLVM made of it
        assert "vpdpbusd" in run.inspect_asm(run.signatures[0])


def test_weight_codes_are_packed_as_the_kernel_reads_them(manifest):
    """fold: every weight within half a code of its channel's scale, codes -127..127, the largest |code| 127 per
    channel, and the flat int32 array, read as bytes, is [group][kh][kw][ci / 4][block][4] of the OIHW codes."""
    conv = resnet50(manifest["variant"]).stem  # 3 input channels: the 4th byte of each quad a zero weight
    choice = model.Choice(tiles.ROWS, tiles.BLOCK)

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    packed, scale, _ = model.fold(conv, tensors, manifest["bn_eps"], choice)
    groups, block, k = conv.out_channels // choice.block, choice.block, conv.kernel
    codes = packed.view(np.int8).reshape(groups, k, k, 1, block, model.QUAD)
    oihw = codes.transpose(0, 4, 3, 5, 1, 2).reshape(conv.out_channels, model.QUAD, k, k)
    assert np.all(oihw[:, conv.in_channels:] == 0)
    assert np.abs(oihw).max(axis=(1, 2, 3)).tolist() == [model.INT8_MAX] * conv.out_channels
    gamma, _, _, var = (tensors(f"{conv.bn}.{p}").astype(np.float64) for p in ("weight", "bias", "running_mean",
                                                                               "running_var"))
    folded = tensors(f"{conv.name}.weight") * (gamma / np.sqrt(var + manifest["bn_eps"]))[:, None, None, None]
    error = np.abs(oihw[:, : conv.in_channels] * scale[:, None, None, None].astype(np.float64) - folded)
    assert np.all(error <= scale[:, None, None, None] * (0.5 + 1e-4))


def test_the_zero_point_costs_the_stem_nothing(manifest):
    """With the photo's zero point, the stem's bias takes off what the zero point adds: the same output as codes
    without one, for a photo of all zeros (every code = the zero point)."""
    conv = resnet50(manifest["variant"]).stem
    choice = model.Choice(tiles.ROWS, tiles.BLOCK)
    unit, zero_point = model.input_code(manifest["preprocessing"])

    def tensors(name):
        return load_tensor(name, manifest, WEIGHTS_DIR)

    packed, scale, bias_with = model.fold(conv, tensors, manifest["bn_eps"], choice, zero_point, unit)
    _, _, bias_without = model.fold(conv, tensors, manifest["bn_eps"], choice)
    code_sums = packed.view(np.int8).reshape(conv.out_channels // choice.block, -1, choice.block, model.QUAD)
    per_channel = code_sums.astype(np.int64).sum(axis=(1, 3)).reshape(-1)
    assert np.allclose(per_channel * zero_point * unit * scale + bias_with, bias_without, atol=1e-3)


def test_the_photos_codes_span_its_range(manifest):
    """pixel values 0 and 255 in every channel, normalized, land on codes 0..255 within half a code."""
    unit, zero_point = model.input_code(manifest["preprocessing"])
    pre = manifest["preprocessing"]
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    values = np.concatenate([-mean / std, (pre["scale"] - mean) / std])
    codes = values / unit + zero_point
    assert codes.min() >= -0.5 and codes.max() <= model.U8_MAX + 0.5
    assert np.isclose(codes.min(), 0, atol=0.5) and np.isclose(codes.max(), model.U8_MAX, atol=0.5)


@pytest.fixture
def weights_copy(tmp_path):
    """The exported weights' folder, linked file by file, so that a calibration file can be written beside them."""
    folder = tmp_path / "weights"
    folder.mkdir()
    for path in WEIGHTS_DIR.iterdir():
        if not path.name.startswith("calibration-"):
            (folder / path.name).symlink_to(path.resolve())
    return folder


@pytest.mark.slow
def test_calibration_is_measured_once_and_again_when_damaged(weights_copy, capsys):
    ranges = calibration.activation_ranges(weights_copy)
    names = calibration.tensor_names(load_manifest(weights_copy)["variant"])
    assert list(ranges) == names and all(value > 0 for value in ranges.values())
    (path,) = weights_copy.glob("calibration-*.json")
    assert "calibrating" in capsys.readouterr().err
    assert calibration.activation_ranges(weights_copy) == ranges  # read back, not measured
    assert capsys.readouterr().err == ""
    path.write_text('{"format": 1, "ranges": {"conv1"')  # a half-written file
    assert calibration.activation_ranges(weights_copy) == ranges
    err = capsys.readouterr().err
    assert "could not be read" in err and "calibrating" in err and json.loads(path.read_text())["ranges"] == ranges


def test_without_torch_a_missing_calibration_is_a_one_line_error(weights_copy):
    """In the runtime environment (no torch) the stage cannot calibrate: one line says what to run instead."""
    script = ("import sys; sys.modules['torch'] = None\n"
              "from common.calibration import activation_ranges\n"
              "from common.errors import run_reporting_errors\n"
              f"sys.exit(run_reporting_errors(lambda: activation_ranges({str(weights_copy)!r})))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env=os.environ)
    assert result.returncode != 0
    assert "make calibrate" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(weights_copy.glob("calibration-*"))


@pytest.mark.slow
def test_a_folder_that_cannot_be_written_keeps_the_calibration_in_memory(weights_copy):
    """Measured, used, and a one-line note; nothing written (as root, in a process without the right to override the
    folder's permissions)."""
    script = ("import sys\n"
              "from common.calibration import activation_ranges\n"
              "from common.errors import run_reporting_errors\n"
              f"sys.exit(run_reporting_errors(lambda: print(len(activation_ranges({str(weights_copy)!r})))))")
    weights_copy.chmod(READ_ONLY)
    try:
        result = subprocess.run([*(DROP_READ_OVERRIDE if os.geteuid() == 0 else []), sys.executable, "-c", script],
                                cwd=REPO, capture_output=True, text=True, env=os.environ)
    finally:
        weights_copy.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(calibration.tensor_names(load_manifest(weights_copy)["variant"]))
    assert "cannot be written" in result.stderr and "Traceback" not in result.stderr
    assert not list(weights_copy.glob("calibration-*"))
