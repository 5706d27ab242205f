"""The two photo sets of reduced precision: the photos an int8 model is calibrated on, and those it is judged on.

Post-training quantization runs the float network on a few photos to learn how large each activation gets
(common/calibration.py, and the int8 peers of bench/peers.py); the int8 model is then judged by how often its
top-1 agrees with float32's. Judged on its own calibration photos it would look better than it is, so the two sets
share no photo. Both come from files that pip packages of the dev environment ship (pinned in
requirements-dev.txt), so they are on every machine that runs the tests, nothing is downloaded, and no photo is
committed twice:

- calibration_photos(): every colour photo of a real scene that scikit-learn (sklearn/datasets/images) and
  scikit-image (skimage/data) ship, less those also in pics/ (compared by the files' sha256, not by name:
  pics/cat.png is skimage's chelsea.png, pics/palace.jpg sklearn's china.jpg, and so on) and less
  motorcycle_right.png, the other eye of the stereo pair whose left view is pics/moped.png: the same scene a few
  pixels over, it would let the model be judged on a photo it was calibrated on. matplotlib's sample_data has one
  photo, grace_hopper.jpg, which is pics/grace_hopper.jpg, so it gives none. Six photos are left: an astronaut, a
  flower, a rocket on its pad, the Hubble deep field, a stained tissue section under a microscope and a retina.
  The last three show no ImageNet class, but they are real photos, and their colours and textures widen the
  ranges measured as the odd photo a user brings does. Each also goes in flipped left-right and as its centre
  half, scaled up by the resize (CALIBRATION_VIEWS): 18 inputs, whose ranges see the objects mirrored and at
  twice the size. Left out: grey-scale photos (three equal channels, a corner of the colours real inputs take),
  synthetic images (logos, a colour wheel, chessboards, a phantom, a rendered present, a silhouette, text) and
  images smaller than the network's input;
- evaluation_photos(): the photos of pics/, the package photos kept out of calibration (motorcycle_right.png, and
  grey-scale photos of things, since users bring grey photos too, as pics/camera_tripod.png is one: coins, the
  moon, cells, a clock), and each of those also flipped, cropped to a corner or to its centre, and scaled down to
  a thumbnail (EVALUATION_VIEWS): 66 inputs. The grey textures (brick, grass, gravel) are left out: surfaces that
  fill the frame, no scene for an ImageNet class to name.

Every input is prepared as a stage's input is: common.image's Pillow loader, the manifest's preprocessing, HWC
float32 (224, 224, 3). A view is made from the whole upright photo and then goes through the same resize, centre
crop and normalization, from a lossless copy in memory. The package files are checked against the sha256 recorded
here: another version of a package may ship other pixels under the same name, and calibration_key(), which keys
the caches of calibrated models, is computed from these recorded digests, so it needs neither package installed
(the runtime environment can look up a calibration made in the dev one).
"""

import hashlib
import io
import json
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps

from common.errors import UserError
from common.image import images_in, load_image, normalize, pillow_rgb, pillow_rgb_crop
from common.paths import PICS_DIR
from common.weights import sha256_file

KEY_CHARS = 16  # of calibration_key's sha256: enough to tell two calibration sets apart
SETUP_DEV = "run `make setup-dev` and use .venv-dev/bin/python, the dev environment"
CORNER_CROP = 0.7  # a corner crop keeps this share of the photo's width and height
CENTRE_CROP = 0.5  # a centre crop keeps this share: what it shows, the resize makes twice as large
# A scaled-down view: the photo at this share of its width and height, a thumbnail the resize must scale up again.
# At a half, a 512x512 photo would come out of the resize to 256 exactly as the photo itself does.
RESCALE = 0.4


class PackagePhoto(NamedTuple):
    """A photo a pip package ships: the package's import name, the file inside it, the file's sha256."""
    package: str
    file: str
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.package}/{Path(self.file).name}"


DISTRIBUTIONS = {"sklearn": "scikit-learn", "skimage": "scikit-image", "matplotlib": "matplotlib"}  # for pip
# The colour photos of real scenes, in the order calibration takes them; those also in pics/ drop out.
COLOUR_PHOTOS = (
    PackagePhoto("sklearn", "datasets/images/china.jpg",
                 "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    PackagePhoto("sklearn", "datasets/images/flower.jpg",
                 "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    PackagePhoto("matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                 "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130"),
    PackagePhoto("skimage", "data/astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    PackagePhoto("skimage", "data/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    PackagePhoto("skimage", "data/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    PackagePhoto("skimage", "data/rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    PackagePhoto("skimage", "data/motorcycle_left.png",
                 "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    PackagePhoto("skimage", "data/hubble_deep_field.jpg",
                 "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    PackagePhoto("skimage", "data/ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    PackagePhoto("skimage", "data/retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
)
# Held out of calibration for evaluation: the right eye of pics/moped.png's stereo pair, and grey-scale photos.
HELD_OUT_PHOTOS = (
    PackagePhoto("skimage", "data/motorcycle_right.png",
                 "5fc913ae870e42a4b662314bc904d1786bcad8e2f0b9b67dba5a229406357797"),
    PackagePhoto("skimage", "data/camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
    PackagePhoto("skimage", "data/coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"),
    PackagePhoto("skimage", "data/moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"),
    PackagePhoto("skimage", "data/cell.png", "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515"),
    PackagePhoto("skimage", "data/clock_motion.png",
                 "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955"),
)


def _corner_crop(corner: str) -> Callable[[Image.Image], Image.Image]:
    def crop(img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = round(w * CORNER_CROP), round(h * CORNER_CROP)
        left = 0 if corner.endswith("left") else w - cw
        top = 0 if corner.startswith("top") else h - ch
        return img.crop((left, top, left + cw, top + ch))
    return crop


def _centre_crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    cw, ch = round(w * CENTRE_CROP), round(h * CENTRE_CROP)
    left, top = (w - cw) // 2, (h - ch) // 2
    return img.crop((left, top, left + cw, top + ch))


def _rescaled(img: Image.Image) -> Image.Image:
    w, h = img.size
    return img.resize((round(w * RESCALE), round(h * RESCALE)), Image.Resampling.BILINEAR)


# A view: its name's suffix and what it does to the whole upright photo (None: the photo as a stage reads it).
View = tuple[str, Callable[[Image.Image], Image.Image] | None]
AS_IS: View = ("", None)
FLIPPED: View = ("flipped", ImageOps.mirror)
CENTRE: View = (f"crop centre {CENTRE_CROP:.0%}", _centre_crop)
CALIBRATION_VIEWS = (AS_IS, FLIPPED, CENTRE)
EVALUATION_VIEWS = (AS_IS, FLIPPED, (f"crop top-left {CORNER_CROP:.0%}", _corner_crop("top-left")),
                    (f"crop bottom-right {CORNER_CROP:.0%}", _corner_crop("bottom-right")), CENTRE,
                    (f"rescaled {RESCALE:.0%}", _rescaled))


def _pics_digests() -> set[str]:
    return {sha256_file(path) for path in images_in(PICS_DIR)}


def _calibration_sources() -> list[PackagePhoto]:
    in_pics = _pics_digests()
    return [photo for photo in COLOUR_PHOTOS if photo.sha256 not in in_pics]


def _package_file(photo: PackagePhoto) -> Path:
    """The installed file of a package photo, checked against its recorded sha256."""
    spec = find_spec(photo.package)
    distribution = DISTRIBUTIONS[photo.package]
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"{distribution} is not installed here, and the photos for reduced precision are files it "
                        f"ships; {SETUP_DEV}")
    path = Path(spec.submodule_search_locations[0]) / photo.file
    if not path.is_file() or sha256_file(path) != photo.sha256:
        found = "missing" if not path.is_file() else "another file than the one the photo sets were made from"
        raise UserError(f"{path}: {found} (another version of {distribution}?); install the version "
                        f"requirements-dev.txt pins: {SETUP_DEV}")
    return path


def _prepared(path: Path, change: Callable[[Image.Image], Image.Image] | None, preprocessing: dict) -> np.ndarray:
    """The network input of one view of a photo, prepared as common.image prepares a stage's input."""
    if change is None:
        return load_image(path, preprocessing)
    lossless = io.BytesIO()
    change(pillow_rgb(path)).save(lossless, format="PNG", compress_level=0)  # level 0: no time spent packing
    lossless.seek(0)
    rgb = pillow_rgb_crop(lossless, preprocessing["resize_shorter_side"], preprocessing["center_crop"]).rgb
    return normalize(rgb, preprocessing)


def _views(sources: list[tuple[str, Path]], views: tuple[View, ...],
           preprocessing: dict) -> list[tuple[str, np.ndarray]]:
    """(name, input) for every view of every source, photo by photo."""
    return [(f"{name} {suffix}" if suffix else name, _prepared(path, change, preprocessing))
            for name, path in sources for suffix, change in views]


def calibration_photos(preprocessing: dict) -> list[tuple[str, np.ndarray]]:
    """(name, HWC float32 input) of every calibration input, in a fixed order: each photo's CALIBRATION_VIEWS."""
    sources = [(photo.name, _package_file(photo)) for photo in _calibration_sources()]
    return _views(sources, CALIBRATION_VIEWS, preprocessing)


def evaluation_photos(preprocessing: dict) -> list[tuple[str, np.ndarray]]:
    """(name, HWC float32 input) of every evaluation input, in a fixed order: pics/, then the held-out package
    photos not in pics/, each in every EVALUATION_VIEWS. None is a calibration photo or a view of one."""
    in_pics = _pics_digests()
    sources = [(path.name, path) for path in images_in(PICS_DIR)]
    sources += [(photo.name, _package_file(photo)) for photo in HELD_OUT_PHOTOS if photo.sha256 not in in_pics]
    return _views(sources, EVALUATION_VIEWS, preprocessing)


def calibration_key(preprocessing: dict) -> str:
    """A short digest of the calibration set: its inputs' names, the recorded sha256 of their files and the
    preprocessing; what caches of calibrated models are keyed by. Needs no package installed."""
    photos = [(photo.name, photo.sha256) for photo in _calibration_sources()]
    stamp = [photos, [suffix for suffix, _ in CALIBRATION_VIEWS], preprocessing]
    return hashlib.sha256(json.dumps(stamp, sort_keys=True).encode()).hexdigest()[:KEY_CHARS]
