"""The photo sets of reduced precision (common/photos.py): the calibration set and the evaluation set share no
input, every input is a stage's input, both come out the same at every call, and the key of the calibration set
follows the preprocessing."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from common.architecture import IMAGE_SIZE
from common.image import images_in, load_image
from common.paths import PICS_DIR, REPO
from common.photos import _prepared, calibration_key, calibration_photos, evaluation_photos

MIN_CALIBRATION = 12
MIN_EVALUATION = 50
CHANNELS = 3


@pytest.fixture(scope="module")
def calibration(manifest) -> list[tuple[str, np.ndarray]]:
    return calibration_photos(manifest["preprocessing"])


@pytest.fixture(scope="module")
def evaluation(manifest) -> list[tuple[str, np.ndarray]]:
    return evaluation_photos(manifest["preprocessing"])


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_the_sets_share_no_input(calibration, evaluation):
    calibrated = {digest(image): name for name, image in calibration}
    shared = [(name, calibrated[digest(image)]) for name, image in evaluation if digest(image) in calibrated]
    assert not shared, f"evaluation inputs that are calibration inputs: {shared}"
    assert not {name for name, _ in calibration} & {name for name, _ in evaluation}


def test_no_calibration_photo_is_in_pics(manifest, calibration):
    pics = {digest(load_image(path, manifest["preprocessing"])) for path in images_in(PICS_DIR)}
    assert not [name for name, image in calibration if digest(image) in pics]


def test_every_input_is_a_stage_input(calibration, evaluation):
    assert len(calibration) >= MIN_CALIBRATION and len(evaluation) >= MIN_EVALUATION
    for name, image in calibration + evaluation:
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, CHANNELS) and image.dtype == np.float32, name
        assert np.isfinite(image).all(), name
    names = [name for name, _ in calibration + evaluation]
    assert len(set(names)) == len(names), "two inputs of one name"
    assert len({digest(image) for _, image in calibration + evaluation}) == len(names), "two inputs of one content"


def test_a_view_is_prepared_as_the_stages_prepare_a_photo(manifest):
    """A view goes through a lossless copy in memory and then the stages' resize, crop and normalization: the
    view that changes nothing gives the stages' input exactly."""
    for path in images_in(PICS_DIR):
        assert np.array_equal(_prepared(path, lambda img: img, manifest["preprocessing"]),
                              load_image(path, manifest["preprocessing"])), path.name


def test_the_sets_are_the_same_at_every_call(manifest, calibration, evaluation):
    for made, again in [(calibration, calibration_photos(manifest["preprocessing"])),
                        (evaluation, evaluation_photos(manifest["preprocessing"]))]:
        assert [name for name, _ in made] == [name for name, _ in again]
        assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(made, again, strict=True))


def test_the_key_follows_the_preprocessing(manifest):
    preprocessing = manifest["preprocessing"]
    key = calibration_key(preprocessing)
    assert key == calibration_key(dict(preprocessing))
    assert calibration_key({**preprocessing, "resize_shorter_side": preprocessing["resize_shorter_side"] + 1}) != key
    assert calibration_key({**preprocessing, "mean": [0.0, 0.0, 0.0]}) != key


def test_a_missing_package_gets_one_line(manifest):
    """As in the runtime environment (.venv), which has neither scikit-image nor scikit-learn (a hook that makes
    both look uninstalled stands in for it): the key is still there, for a calibration made in the dev
    environment; the photos are one line saying where they are."""
    code = ("import importlib.util, sys\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name in ('skimage', 'sklearn') else real(name, *a)\n"
            "from common.errors import run_reporting_errors\n"
            "from common.photos import calibration_key, calibration_photos\n"
            "from common.weights import load_manifest\n"
            "preprocessing = load_manifest()['preprocessing']\n"
            "print(calibration_key(preprocessing))\n"
            "sys.exit(run_reporting_errors(lambda: calibration_photos(preprocessing)))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and result.stdout.strip() == calibration_key(manifest["preprocessing"])
    assert "make setup-dev" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
