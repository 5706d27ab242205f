"""explain/ and the activation capture it relies on (common.trace.capture), against the PyTorch reference.

- every stage: the captured output of the stem and of each layer group equals the reference's (forward hooks
  on torchvision's maxpool and layer1..layer4) within ACTIVATION_TOLERANCE, relative to the largest value;
  the class activation map from the captured layer4 equals the same formula on the reference's layer4 within
  CAM_TOLERANCE (relative); each class's 7x7 map, averaged, plus the fc bias is the stage's logit, for all 1000
  classes, within LOGIT_TOLERANCE; the forward pass is left unwrapped afterwards;
- `python -m explain` with its defaults (the fastest stage): every picture and cam.npy written, non-empty, cam.npy
  the reference's map within CAM_TOLERANCE; bad input gets one line, exit code 1 (2 for usage), and nothing is
  written;
- the hand-written colormap is matplotlib's inferno within INFERNO_TOLERANCE grey levels.
The measured agreement is printed (pytest -s) and recorded as test properties.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.architecture import resnet50
from common.paths import PICS_DIR, REPO
from common.stages import EXPLAINED, FLOAT32_STAGES, STAGES, record, stage_module
from common.trace import GROUPS, STEM, capture, inside
from common.weights import load_tensor
from explain.__main__ import CAM, CAM_NPY, CAM_TOP3, FEATURES, FILTERS, SHEET, main
from explain.cam import class_activation_map
from explain.pictures import colormap

CAT = PICS_DIR / "cat.png"
ACTIVATION_TOLERANCE = 1e-4  # |stage - reference| / largest |reference|, per group
CAM_TOLERANCE = 1e-4  # the same for the 7x7 map
LOGIT_TOLERANCE = 1e-4  # |mean(map) + bias - logit|, logits being of the order of 10
INFERNO_TOLERANCE = 7  # grey levels: 17 anchors joined by straight lines, against matplotlib's 256 entries
EXIT_FAILED, EXIT_USAGE = 1, 2
PNG_OUTPUTS = (CAM, CAM_TOP3, FILTERS, FEATURES, SHEET)


def reference_outputs(reference, image: np.ndarray) -> dict[str, np.ndarray]:
    """The reference's output of the stem (its max pool) and of layer1..layer4, HWC, from forward hooks."""
    outputs = {}
    modules = {STEM: reference.model.maxpool, **{group: getattr(reference.model, group) for group in GROUPS[1:]}}

    def hook(group):
        return lambda module, inputs, output: outputs.__setitem__(group, output[0].permute(1, 2, 0).numpy().copy())

    handles = [module.register_forward_hook(hook(group)) for group, module in modules.items()]
    try:
        reference.forward(image)
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.shape == theirs.shape
    return float(np.abs(ours.astype(np.float64) - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def cat(manifest, images, reference):
    """The cat's network input, the reference's group outputs, fc weight and bias."""
    image = images[CAT]
    fc = resnet50(manifest["variant"]).fc.name
    return image, reference_outputs(reference, image), load_tensor(f"{fc}.weight", manifest), \
        load_tensor(f"{fc}.bias", manifest)


# explain refuses the others: they keep codes, not values, or compute some layers' outputs in part only
EXPLAINABLE = [stage for stage in FLOAT32_STAGES if not record(stage).rewrites]


@pytest.mark.slow
@pytest.mark.parametrize("stage", EXPLAINABLE)
def test_capture_matches_reference(stage, manifest, cat, record_property):
    from numba.core.dispatcher import Dispatcher

    image, expected, fc_weight, fc_bias = cat
    logits, outputs = capture(stage_module(stage).Model(), image, manifest["variant"])
    assert "__call__" not in Dispatcher.__dict__, "the kernels are still wrapped after the capture"
    assert list(outputs) == list(GROUPS)
    errors = {group: relative_error(outputs[group], expected[group]) for group in GROUPS}
    for group, error in errors.items():
        assert error <= ACTIVATION_TOLERANCE, f"{stage} {group}: relative error {error:.1e}"
    top1 = int(np.argmax(logits))
    cam = class_activation_map(outputs[GROUPS[-1]], fc_weight, top1)
    assert cam.shape == expected[GROUPS[-1]].shape[:2] and cam.dtype == np.float32
    cam_error = relative_error(cam, class_activation_map(expected[GROUPS[-1]], fc_weight, top1))
    assert cam_error <= CAM_TOLERANCE, f"{stage}: CAM relative error {cam_error:.1e}"
    every_class = np.einsum("hwk,ck->hwc", outputs[GROUPS[-1]].astype(np.float64), fc_weight)  # all 1000 maps
    logit_error = float(np.abs(every_class.mean(axis=(0, 1)) + fc_bias - logits).max())
    assert logit_error <= LOGIT_TOLERANCE, f"{stage}: mean(map) + bias is {logit_error:.1e} off the logit"
    record_property("cam_relative_error", cam_error)
    record_property("logit_error", logit_error)
    print(f"\n{stage}: CAM vs reference {cam_error:.1e} (relative); mean(map) + bias vs logit {logit_error:.1e}; "
          + ", ".join(f"{group} {error:.1e}" for group, error in errors.items()))


def test_inside_strips_a_border_and_merged_axes():
    activation = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    bordered = np.zeros((4, 5, 4), np.float32)
    bordered[1:-1, 1:-1] = activation
    assert np.array_equal(inside(bordered, activation.shape), activation)
    assert np.array_equal(inside(bordered.reshape(4, 5 * 4), activation.shape), activation)  # rows as (H, W*C)
    copy = inside(activation, activation.shape)
    activation[...] = 0  # a later kernel reusing the buffer
    assert copy.any(), "inside() must copy"


def test_colormap_is_inferno():
    from matplotlib import colormaps

    levels = np.linspace(0.0, 1.0, 256)
    theirs = np.round(colormaps["inferno"](levels)[:, :3] * 255)
    ours = colormap(levels[None])[0]
    assert ours.dtype == np.uint8 and ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= INFERNO_TOLERANCE


@pytest.mark.slow
def test_command_writes_every_picture_and_the_map(tmp_path, capsys, cat, record_property):
    _, expected, fc_weight, _ = cat
    out = tmp_path / "new" / "explain"  # its parent does not exist yet either
    assert main([str(CAT), "-o", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["stage"] == EXPLAINED and len(line["top5"]) == 5
    assert line["top5"][0]["label"] == "Egyptian cat"
    assert line["files"] == [str(out / name) for name in (CAM, CAM_TOP3, CAM_NPY, FILTERS, FEATURES, SHEET)]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name], "the staging folder was left behind"
    for name in PNG_OUTPUTS:
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.width > 0 and picture.height > 0
            pixels = np.asarray(picture.convert("RGB"))
        assert pixels.std() > 0, f"{name} is blank"
    with Image.open(out / CAM) as picture, Image.open(out / CAM_TOP3) as top3:
        assert top3.width > 2 * picture.width
    cam = np.load(out / CAM_NPY)
    assert cam.dtype == np.float32 and cam.shape == expected[GROUPS[-1]].shape[:2]
    error = relative_error(cam, class_activation_map(expected[GROUPS[-1]], fc_weight, line["top5"][0]["class_id"]))
    assert error <= CAM_TOLERANCE
    record_property("cam_npy_relative_error", error)
    # Again into the same folder: every file replaced, nothing else left there.
    assert main([str(CAT), "-o", str(out), "--stage", EXPLAINED]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(f).name for f in line["files"])


@pytest.mark.parametrize("stage", [stage for stage in STAGES if stage not in FLOAT32_STAGES])
def test_a_stage_that_keeps_codes_is_refused_in_one_line(stage, tmp_path, capsys):
    out = tmp_path / "explained"
    with pytest.raises(SystemExit) as exited:
        main([str(CAT), "-o", str(out), "--stage", stage])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "codes, not values" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("stage", [stage for stage in FLOAT32_STAGES if stage not in EXPLAINABLE])
def test_a_stage_that_rewrites_the_network_is_refused_in_one_line(stage, tmp_path, capsys):
    out = tmp_path / "explained"
    with pytest.raises(SystemExit) as exited:
        main([str(CAT), "-o", str(out), "--stage", stage])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "rewritten network" in err and "Traceback" not in err
    assert not out.exists()


def test_bad_input_gets_one_line_and_writes_nothing(tmp_path, capsys):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("not a picture")
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    out = tmp_path / "new" / "out"  # its parent is made for the run, and must be gone after a failed one
    before = sorted(tmp_path.iterdir())
    cases = {
        "no such file": [str(tmp_path / "missing.jpg"), "-o", str(out)],
        "is a directory": [str(tmp_path), "-o", str(out)],
        "cannot read image": [str(not_an_image), "-o", str(out)],
        "is a file, not a folder": [str(CAT), "-o", str(blocked)],
        "cannot write the outputs": [str(CAT), "-o", str(blocked / "out")],  # a file where a folder should be
    }
    for words, argv in cases.items():
        assert main(argv) == EXIT_FAILED, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err, err
        assert sorted(tmp_path.iterdir()) == before and blocked.read_text() == "", argv
    with pytest.raises(SystemExit) as exit_info:
        main([str(CAT), "--stage", "99"])
    assert exit_info.value.code == EXIT_USAGE and "no stage '99'" in capsys.readouterr().err


@pytest.mark.slow
def test_module_without_weights_exits_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "explain", str(CAT), "-o", str(tmp_path / "out")], cwd=REPO,
                            capture_output=True, text=True,
                            env={**os.environ, "RESNET_WEIGHTS_DIR": str(tmp_path / "none")})
    assert result.returncode == EXIT_FAILED and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "make weights" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() and result.stdout == ""
