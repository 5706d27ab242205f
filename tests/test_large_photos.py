"""Phone-sized photos: a large JPEG is decoded at a reduced scale (common/image.py), and that must not change
what the network sees by more than a little, nor what it answers.

The photos are pics/ scaled up to 12 megapixels, made here by bench/album.py: once as they are, once with
sensor-like grain (detail at full resolution that a reduced decode averages differently). Each is read by
both loaders twice, reduced and at full size, and the 224x224 inputs compared; the PyTorch reference then
classifies both; and the fastest stage's command line classifies the whole folder.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.album import make_album
from common.image import LOADERS, REDUCTION_GAP, dct_scale, normalize, opencv_rgb_crop, pillow_rgb_crop
from common.labels import TOP_K, softmax
from common.stages import FASTEST
from tests.conftest import PICS
from tests.test_cli_errors import run_stage

GRAIN = 4.0  # levels of 0..255
CROPS = {"pillow": pillow_rgb_crop, "opencv": opencv_rgb_crop}
# Reduced vs full decode, |difference| of the uint8 crops over every photo (measured on 2026-11-29: Pillow at most
# 4 at one pixel and 0.34 on average per photo; OpenCV 33 and 2.01, since it cuts the centre square at whole
# pixels of the reduced image, a quarter of the full one's). Pillow's bound fails a crop box that is off by a
# fraction of a reduced pixel: centred on the rounded-up reduced size, the largest was 37 and the mean 2.2.
MAX_ABS_BOUND = {"pillow": 8, "opencv": 40}
MEAN_ABS_BOUND = {"pillow": 0.5, "opencv": 2.5}
# Reduced vs full decode, the largest difference of any class probability (measured on 2026-11-29: 0.011 with
# Pillow, 0.039 with OpenCV).
PROB_BOUND = {"pillow": 0.02, "opencv": 0.05}
SMALL_RESIZE = 16  # dct_scale's rule checked on small JPEGs: the same thresholds, scaled down


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory) -> dict[str, list[Path]]:
    """'plain' and 'grain': pics/ at 12 megapixels, in pics/ order."""
    folder = tmp_path_factory.mktemp("phone")
    return {"plain": make_album(folder / "plain", len(PICS)), "grain": make_album(folder / "grain", len(PICS), GRAIN)}


@pytest.mark.parametrize(("size", "scale"), [
    ((16 * 32, 12 * 32), 8), ((8 * 32 - 1, 16 * 32), 4), ((8 * 32, 4 * 32), 4), ((4 * 32, 4 * 32 - 1), 2),
    ((2 * 32, 300), 2), ((2 * 32 - 1, 300), 1), ((20, 20), 1),
])
def test_dct_scale_is_pillows_draft_rule(size, scale, tmp_path):
    """The OpenCV loader's reduction (dct_scale) is the one Pillow's draft() picks for the same photo."""
    assert REDUCTION_GAP * SMALL_RESIZE == 32
    assert dct_scale(size, SMALL_RESIZE) == scale
    path = tmp_path / "small.jpg"
    Image.new("RGB", size, (120, 80, 40)).save(path)
    with Image.open(path) as img:
        img.draft(None, (REDUCTION_GAP * SMALL_RESIZE,) * 2)
        assert img.size == tuple(-(-side // scale) for side in size)  # libjpeg rounds up


@pytest.mark.parametrize("loader", LOADERS)
def test_reduced_decode_is_close_to_the_full_decode(loader, large_photos, manifest, record_property):
    prep = manifest["preprocessing"]
    crop = CROPS[loader]
    worst_max, worst_mean = 0, 0.0
    for photo in large_photos["plain"] + large_photos["grain"]:
        reduced = crop(photo, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.int16)
        full = crop(photo, prep["resize_shorter_side"], prep["center_crop"], reduce=False).rgb.astype(np.int16)
        difference = np.abs(reduced - full)
        assert difference.max() > 0, f"{photo.name}: not decoded reduced"
        worst_max, worst_mean = max(worst_max, int(difference.max())), max(worst_mean, float(difference.mean()))
    record_property("max_abs_diff", worst_max)
    record_property("mean_abs_diff", worst_mean)
    print(f"\n{loader}: reduced vs full decode of {2 * len(PICS)} photos of 12 megapixels: largest |difference| "
          f"{worst_max}, largest mean |difference| {worst_mean:.2f} (0..255)")
    assert worst_max <= MAX_ABS_BOUND[loader] and worst_mean <= MEAN_ABS_BOUND[loader]


def probabilities(reference, rgb: np.ndarray, prep: dict) -> np.ndarray:
    return softmax(reference.forward(normalize(rgb, prep)))


def top5(probs: np.ndarray) -> list[int]:
    return [int(c) for c in np.argsort(-probs)[:TOP_K]]


@pytest.mark.slow
@pytest.mark.parametrize("loader", LOADERS)
def test_reduced_decode_keeps_the_answer(loader, large_photos, manifest, reference, record_property):
    """The reference's answer on pics/ at 12 megapixels, decoded reduced or at full size: the same top-1, every
    probability within PROB_BOUND, and with Pillow the same top-5 in the same order. (OpenCV's top-5 differed on
    three photos of twelve, in third to fifth place, between classes within 0.1 percentage points.)"""
    prep = manifest["preprocessing"]
    crop = CROPS[loader]
    worst = 0.0
    for kind, photos in large_photos.items():
        for photo in photos:
            reduced = probabilities(reference, crop(photo, prep["resize_shorter_side"], prep["center_crop"]).rgb, prep)
            full = probabilities(reference, crop(photo, prep["resize_shorter_side"], prep["center_crop"],
                                                 reduce=False).rgb, prep)
            worst = max(worst, float(np.abs(reduced - full).max()))
            what = f"{photo.name} ({kind}): top-5 {top5(reduced)} reduced, {top5(full)} at full size"
            assert top5(reduced)[0] == top5(full)[0], what
            assert loader != "pillow" or top5(reduced) == top5(full), what
    record_property("max_prob_diff", worst)
    print(f"\n{loader}: reduced vs full decode, largest probability difference {worst:.4f}")
    assert worst <= PROB_BOUND[loader]


@pytest.mark.slow
def test_fastest_stage_classifies_a_folder_of_large_photos(large_photos, manifest, reference):
    """The command line, decoding in batches: one line per photo in folder order, each with the top-1 the
    reference gives the photo decoded at full size."""
    folder = large_photos["grain"][0].parent
    result = run_stage(FASTEST, folder, "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"] for line in lines] == [str(p) for p in large_photos["grain"]]
    prep = manifest["preprocessing"]
    for line, photo in zip(lines, large_photos["grain"], strict=True):
        full = pillow_rgb_crop(photo, prep["resize_shorter_side"], prep["center_crop"], reduce=False).rgb
        assert line["top5"][0]["class_id"] == top5(probabilities(reference, full, prep))[0], photo.name
