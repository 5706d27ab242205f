"""Photos as users have them: every image mode and oddity below must be classified, not rejected, and give
the network the input an ordinary RGB photo of the same picture would give.

Each variant is made here from a picture in pics/ and compared with an "equivalent" file holding the
pixels the variant stands for (e.g. a 16-bit PNG with its 8-bit original, an RGBA image with the same
picture composited onto white), through the same loader. Then the fastest stage classifies all of them
in one run, and stage 1 one of them.

Also: how close the OpenCV loader comes to the Pillow loader (the bound is stated below).
"""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from common.image import EXIF_ORIENTATION, LOADERS, load_image, opencv_rgb_crop, pillow_rgb_crop
from common.labels import softmax
from common.paths import PICS_DIR
from common.stages import FASTEST
from tests.conftest import PICS
from tests.test_cli_errors import run_stage

CAT, EGYPTIAN_CAT = PICS_DIR / "cat.png", 285
UPRIGHT_PHOTO, MILITARY_UNIFORM = PICS_DIR / "grace_hopper.jpg", 652
JPEG_QUALITY = 95
RGB_16BIT = 257  # 0..255 -> 0..65535
PANORAMA_ASPECT = 40  # width / height of the generated panorama
PANORAMA_SKY = (90, 140, 200)
ONE_PIXEL = (200, 30, 90)  # RGB
ROTATE_90_CLOCKWISE = 6  # EXIF orientation: the stored pixels must be turned 90 degrees clockwise to be upright
# pillow vs opencv, per picture: the mean |difference| of the uint8 RGB crops (0..255; measured 0.65 to 4.25
# on pics/); the top-1 class must agree as well, see test_loaders_agree.
LOADER_MEAN_ABS_BOUND = 5.0
# A lossy re-encode (CMYK JPEG, EXIF-rotated JPEG) vs its source: mean |difference| of the uint8 crop.
REENCODE_MEAN_ABS_BOUND = 2.0
SIDEWAYS_FACTOR = 10  # a photo read sideways is at least this much further from the upright one


def rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def half_transparent(size: tuple[int, int]) -> np.ndarray:
    """HW uint8 alpha: opaque left half, transparent right half."""
    alpha = np.full(size[::-1], 255, np.uint8)
    alpha[:, size[0] // 2:] = 0
    return alpha


def white_right_half(img: Image.Image) -> Image.Image:
    out = np.asarray(img.convert("RGB")).copy()
    out[:, img.width // 2:] = 255
    return Image.fromarray(out)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """name -> (the variant file, a plain 8-bit RGB file of the pixels it must be read as)."""
    folder = tmp_path_factory.mktemp("variants")
    same = folder / "equivalent"
    same.mkdir()
    cat = rgb(CAT)
    gray = cat.convert("L")
    made = {}

    def add(name: str, variant: Image.Image | None, equivalent: Image.Image, **save) -> None:
        path = folder / name
        if variant is not None:
            variant.save(path, **save)
        equivalent.save(same / f"{path.stem}.png")
        made[name] = (path, same / f"{path.stem}.png")

    add("gray.png", gray, gray.convert("RGB"))
    add("gray_alpha.png", Image.merge("LA", [gray, Image.fromarray(half_transparent(gray.size))]),
        white_right_half(gray))
    palette = cat.convert("P", palette=Image.Palette.ADAPTIVE)
    add("palette.png", palette, palette.convert("RGB"))
    rgba = cat.copy()
    rgba.putalpha(Image.fromarray(half_transparent(cat.size)))
    add("rgba.png", rgba, white_right_half(cat))
    add("cmyk.jpg", cat.convert("CMYK"), cat, quality=JPEG_QUALITY)
    add("gray16.png", Image.fromarray(np.asarray(gray, np.uint16) * RGB_16BIT), gray.convert("RGB"))
    # Pillow cannot write 16-bit RGB; OpenCV can (BGR channel order).
    cv2.imwrite(str(folder / "rgb16.png"), np.asarray(cat)[..., ::-1].astype(np.uint16) * RGB_16BIT)
    add("rgb16.png", None, cat)
    espresso = rgb(PICS_DIR / "espresso.png").resize(cat.size)
    first_frame = cat.quantize()  # a GIF holds palette images; the first frame as saved alone
    add("animated.gif", first_frame, first_frame.convert("RGB"), save_all=True,
        append_images=[espresso.quantize()], duration=100, loop=0)
    add("one_pixel.png", Image.new("RGB", (1, 1), ONE_PIXEL), Image.new("RGB", cat.size, ONE_PIXEL))
    # The cat in the middle of a blue strip; the width keeps the cat exactly centred (no half-pixel shift).
    width = cat.height * PANORAMA_ASPECT + (cat.height * PANORAMA_ASPECT - cat.width) % 2
    panorama = Image.new("RGB", (width, cat.height), PANORAMA_SKY)
    panorama.paste(cat, ((width - cat.width) // 2, 0))
    add("panorama.jpg", panorama, cat, quality=JPEG_QUALITY)
    upright = rgb(UPRIGHT_PHOTO)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CLOCKWISE
    add("phone.jpg", upright.transpose(Image.Transpose.ROTATE_90), upright, quality=JPEG_QUALITY, exif=exif)
    return made


LOSSLESS = ["gray.png", "gray_alpha.png", "palette.png", "rgba.png", "gray16.png", "rgb16.png", "animated.gif",
            "one_pixel.png"]
LOSSY = ["cmyk.jpg", "panorama.jpg", "phone.jpg"]  # JPEG-encoded: close to the equivalent, not equal


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", LOSSLESS)
def test_variant_reads_as_its_pixels(name, loader, variants, manifest):
    variant, equivalent = variants[name]
    prep = manifest["preprocessing"]
    x = load_image(variant, prep, loader)
    assert x.shape == (prep["center_crop"], prep["center_crop"], 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, load_image(equivalent, prep, loader))


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize("name", LOSSY)
def test_jpeg_variant_is_close_to_its_pixels(name, loader, variants, manifest):
    variant, equivalent = variants[name]
    crop = pillow_rgb_crop if loader == "pillow" else opencv_rgb_crop
    prep = manifest["preprocessing"]
    got = crop(variant, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
    want = crop(equivalent, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
    assert np.abs(got - want).mean() <= REENCODE_MEAN_ABS_BOUND


def test_exif_rotation_is_applied(variants, manifest):
    """Without the tag the same pixels are a sideways photo, far from the upright one: the test can fail.
    (Measured: mean |difference| about 0.2 with the tag applied, about 70 without, in uint8 units.)"""
    phone, upright = variants["phone.jpg"]
    sideways = phone.with_name("sideways.jpg")
    with Image.open(phone) as img:
        img.save(sideways, quality=JPEG_QUALITY)  # the same pixels, no EXIF
    prep = manifest["preprocessing"]
    for loader in LOADERS:
        want = load_image(upright, prep, loader)
        assert np.abs(load_image(sideways, prep, loader) - want).mean() > SIDEWAYS_FACTOR * np.abs(
            load_image(phone, prep, loader) - want).mean()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_opencv_follows_every_exif_orientation(orientation, tmp_path, manifest):
    """The OpenCV loader turns the pixels itself (OpenCV ignores EXIF when it keeps alpha): it must agree with
    Pillow's exif_transpose for all eight orientations. A lossless PNG with EXIF isolates the turning."""
    path = tmp_path / f"orientation{orientation}.png"
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    rgb(CAT).save(path, exif=exif)
    prep = manifest["preprocessing"]
    pil = pillow_rgb_crop(path, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
    ocv = opencv_rgb_crop(path, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
    assert np.abs(pil - ocv).mean() <= LOADER_MEAN_ABS_BOUND


@pytest.mark.slow
def test_loaders_agree(manifest, reference, record_property):
    """pillow vs opencv on every picture: the uint8 crops differ by at most LOADER_MEAN_ABS_BOUND on average
    (OpenCV's JPEG IDCT and INTER_AREA resize vs Pillow's antialiased bilinear filter), and the reference
    network gives both the same top-1 class."""
    prep = manifest["preprocessing"]
    worst = 0.0
    for path in PICS:
        pil = pillow_rgb_crop(path, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
        ocv = opencv_rgb_crop(path, prep["resize_shorter_side"], prep["center_crop"]).rgb.astype(np.float32)
        mean_abs = float(np.abs(pil - ocv).mean())
        worst = max(worst, mean_abs)
        assert mean_abs <= LOADER_MEAN_ABS_BOUND, path.name
        top1 = [int(np.argmax(softmax(reference.forward(load_image(path, prep, loader))))) for loader in LOADERS]
        assert top1[0] == top1[1], f"{path.name}: top-1 {top1} with {LOADERS}"
    record_property("loader_mean_abs_diff", worst)
    print(f"\npillow vs opencv: largest mean |difference| of the uint8 crops over {len(PICS)} pictures: {worst:.2f}")


@pytest.mark.slow
def test_fastest_stage_classifies_every_variant(variants, tmp_path):
    """The variants made from the cat photo are classified as Egyptian cat, the turned phone photo as a uniform."""
    folder = tmp_path / "album"
    folder.mkdir()
    for path, _ in variants.values():
        shutil.copy(path, folder / path.name)
    result = run_stage(FASTEST, folder, "--json")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    lines = {Path(line["image"]).name: line for line in map(json.loads, result.stdout.splitlines())}
    assert sorted(lines) == sorted(variants)
    from_cat = set(variants) - {"phone.jpg", "one_pixel.png"}
    for name in from_cat:
        assert lines[name]["top5"][0]["class_id"] == EGYPTIAN_CAT, (name, lines[name]["top5"][0])
    assert lines["phone.jpg"]["top5"][0]["class_id"] == MILITARY_UNIFORM
    assert len(lines["one_pixel.png"]["top5"]) == 5


@pytest.mark.slow
def test_stage1_classifies_turned_phone_photo(variants):
    phone, _ = variants["phone.jpg"]
    result = run_stage("stage1_origin", phone, "--json", "--warmup", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(result.stdout)["top5"][0]["class_id"] == MILITARY_UNIFORM
