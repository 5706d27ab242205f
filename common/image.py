"""Photo -> network input: an HWC float32 array of shape (224, 224, 3).

Steps: decode (any format Pillow opens; the first frame of an animation; a large JPEG at a reduced scale),
turn any mode into RGB (alpha composited onto white, 16-bit scaled to 8-bit, CMYK converted), resize so
the shorter side is 256 (bilinear) and take the centre 224x224, turn that upright by the EXIF orientation,
then normalize with the manifest's preprocessing: channel order, x = (pixel / 255 * scale - mean) / std.

Two loaders: ``pillow`` (the default, and the one the tests' reference uses) and ``opencv``, a second
implementation with OpenCV that matches the Pillow tensor closely but not exactly: OpenCV decodes JPEG
with another IDCT and resizes with INTER_AREA (downscaling) / INTER_LINEAR (upscaling) instead of
Pillow's antialiased bilinear filter. tests/test_images.py states how close.

A large JPEG is decoded at a reduced scale, by both loaders the same way: libjpeg can scale its 8x8 DCT blocks
down to 4x4, 2x2 or 1x1 pixels while it decodes, which skips most of the inverse DCT, the colour conversion and
the upsampling of a 12-megapixel phone photo, of which the network sees 224x224 pixels. It reduces by 1/2, 1/4
or 1/8 only as far as the shorter side stays at least REDUCTION_GAP times the resize target, so the resize still
averages several decoded pixels into each one it outputs (Pillow's thumbnail() keeps the same gap). A photo of
12 megapixels decodes at a quarter of its size: 16 ms instead of 79 with Pillow on the 2-core development
machine, from the file to the crop (`python -m bench.decode`, 2026-11-29). What it changes, on pics/
scaled up to 12 megapixels with and without sensor-like grain (tests/test_large_photos.py): the Pillow
loader's 224x224 input moves by at most 4 at one pixel and 0.34 on average (0..255), and the top-5 stays the
same; the OpenCV loader's by 33 and 2.0 (it cuts the centre square at whole reduced pixels), the top-1 stays.

OpenCV's log is silenced; what libjpeg and libpng print about a damaged file themselves is caught and becomes
part of that file's own line: the reason it could not be read, or a remark beside its result.
"""

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from common.errors import STDERR_LOCK, ImageError

LOADERS = ("pillow", "opencv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
WHITE = 255
UINT8_MAX = 255
UINT16_TO_UINT8 = 257  # 65535 / 255
REDUCTION_GAP = 2  # a reduced decode keeps its shorter side at least this many times the resize target
DCT_SCALES = (8, 4, 2)  # the reductions libjpeg's DCT scaling offers: 1/8, 1/4, 1/2
STDERR_FD = 2
# Between MAX_IMAGE_PIXELS and twice that Pillow only warns; beyond, load_image reports its DecompressionBombError.
# Ignored here once for all, not per photo: warnings.catch_warnings() is not thread-safe, and photos decode in
# threads (common/prefetch.py).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class Decoded(NamedTuple):
    """A loader's output: HWC uint8 RGB pixels, and what the decoder printed about damaged data on the way
    (empty for an intact file)."""
    rgb: np.ndarray
    remarks: str


class Photo(NamedTuple):
    """What read_photo gives the command line: the network input and the decoder's remarks."""
    image: np.ndarray
    remarks: str


def dct_scale(size: tuple[int, int], resize: int) -> int:
    """The largest libjpeg reduction (8, 4 or 2; 1 for none) that leaves the shorter side of an image of
    this size at least REDUCTION_GAP x resize: the rule of Pillow's draft(), which the OpenCV loader follows."""
    shorter = min(size)
    return next((s for s in DCT_SCALES if shorter // s >= REDUCTION_GAP * resize), 1)


def images_in(folder: Path) -> list[Path]:
    """The image files in a folder (by suffix, not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """HWC uint8 RGBA -> RGB, composited onto white: transparent pixels show as background, not as black."""
    alpha = rgba[..., 3:4].astype(np.float32) / UINT8_MAX
    rgb = rgba[..., :3].astype(np.float32) * alpha + WHITE * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def _rgb(img: Image.Image) -> Image.Image:
    """Any mode -> RGB: alpha composited onto white, 16-bit and float scaled to 8-bit."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's convert() clips 16-bit values at 255; scale them down instead.
        gray = np.asarray(img, dtype=np.uint32) // UINT16_TO_UINT8
        return Image.fromarray(np.clip(gray, 0, UINT8_MAX).astype(np.uint8), "L").convert("RGB")
    if img.mode == "F":
        return Image.fromarray(np.clip(np.asarray(img), 0, UINT8_MAX).astype(np.uint8), "L").convert("RGB")
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        return Image.fromarray(_flatten_alpha(np.asarray(img.convert("RGBA"))), "RGB")
    return img.convert("RGB")


def pillow_rgb(path: Path) -> Image.Image:
    """The whole photo, upright, in RGB."""
    with Image.open(path) as img:
        img.seek(0)  # first frame of an animated GIF/WebP/TIFF
        return _rgb(ImageOps.exif_transpose(img))


# EXIF orientation -> the numpy flips and turns that show the photo upright, the same as ImageOps.exif_transpose
# (HWC arrays: axis 0 is the row, axis 1 the column).
EXIF_ORIENTATION = 0x0112
UPRIGHT = {
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned 180 degrees
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.swapaxes(0, 1),  # transposed
    6: lambda a: np.rot90(a, -1),  # turned 90 degrees clockwise
    7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
    8: lambda a: np.rot90(a, 1),  # turned 90 degrees counter-clockwise
}


def pillow_rgb_crop(path: Path, resize: int, crop: int, reduce: bool = True) -> Decoded:
    """The Pillow loader: HWC uint8 RGB, crop x crop, the centre of the upright photo scaled so that its shorter
    side is `resize`; a large JPEG decoded reduced unless reduce=False. Pillow's decoders say nothing about
    damaged data they can still decode, so there are no remarks.

    The crop is cut and resized as the pixels are stored and only then turned upright: the centre square is
    the same either way, and a reduced decode is ceil(width / scale) pixels wide, its last column standing
    for a fraction of one, which sits at the right and bottom only before turning. Resizing only the crop box
    (Pillow's box=) gives the same pixels as resizing everything and then cropping, without building a huge
    intermediate image for a very wide panorama."""
    with Image.open(path) as img:
        img.seek(0)  # first frame of an animated GIF/WebP/TIFF
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
        w, h = img.size
        # draft() works on JPEGs only and returns the photo's extent in reduced pixels; other formats ignore it.
        drafted = img.draft(None, (REDUCTION_GAP * resize,) * 2) if reduce else None
        if drafted:
            _, (_, _, w, h) = drafted
        rgb = _rgb(img)
    side = crop * min(w, h) / resize  # the crop's side in source pixels
    left, top = (w - side) / 2, (h - side) / 2
    out = rgb.resize((crop, crop), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return Decoded(np.ascontiguousarray(UPRIGHT.get(orientation, np.asarray)(np.asarray(out, dtype=np.uint8))), "")


@cache
def _opencv():
    """cv2, imported on first use (it takes a while) and with its own log silenced: a file it cannot decode
    is reported by load_image in the project's one line, not also by OpenCV's "[ERROR:0@2.3] ..." lines."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    return cv2


@contextmanager
def c_stderr_captured() -> Iterator[list[str]]:
    """Yields a list that, after the block, holds the lines C code wrote to stderr inside it: libjpeg and
    libpng print their warnings themselves, past OpenCV's log level. File descriptor 2 is the whole
    process's, so the block holds STDERR_LOCK, which every line the commands write takes too; two OpenCV
    decodes therefore never run at once."""
    lines: list[str] = []
    with STDERR_LOCK, tempfile.TemporaryFile() as capture:
        saved = os.dup(STDERR_FD)
        os.dup2(capture.fileno(), STDERR_FD)
        try:
            yield lines
        finally:
            os.dup2(saved, STDERR_FD)
            os.close(saved)
            capture.seek(0)
            lines += capture.read().decode(errors="replace").splitlines()


def opencv_rgb_crop(path: Path, resize: int, crop: int, reduce: bool = True) -> Decoded:
    """The OpenCV loader, the same crop as pillow_rgb_crop; the remarks are what libjpeg or libpng printed
    about damaged data."""
    cv2 = _opencv()
    # Pillow reads only the header here: the size, checked against the same decompression-bomb limit as the
    # Pillow loader, the format, and the EXIF orientation, which OpenCV ignores when it keeps alpha and 16 bits.
    with Image.open(path) as header:
        orientation = header.getexif().get(EXIF_ORIENTATION, 1)
        jpeg = isinstance(header, JpegImagePlugin.JpegImageFile)
        scale = dct_scale(header.size, resize) if jpeg and reduce else 1
    # A JPEG holds neither alpha nor 16 bits, so the colour modes that reduce (and ignore EXIF) lose nothing.
    reduced = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
    flags = reduced[scale] | cv2.IMREAD_IGNORE_ORIENTATION if scale > 1 else cv2.IMREAD_UNCHANGED
    data = np.fromfile(path, dtype=np.uint8)
    with c_stderr_captured() as said:
        try:
            img = cv2.imdecode(data, flags)
        except cv2.error as e:
            said.insert(0, e.err)
            img = None
    remarks = "; ".join(line.strip() for line in said if line.strip())
    if img is None:
        raise ValueError("OpenCV cannot decode it" + (f": {remarks}" if remarks else ""))
    if img.dtype == np.uint16:
        img = (img // UINT16_TO_UINT8).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = _flatten_alpha(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA))
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    # As in pillow_rgb_crop: cut and resized as stored, turned upright last. The crop lies inside the centre
    # square; cutting that out first keeps a very wide panorama from being resized whole (a 100000 x 10 strip
    # would grow to gigabytes).
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    interpolation = cv2.INTER_AREA if side > resize else cv2.INTER_LINEAR
    img = cv2.resize(img[top:top + side, left:left + side], (resize, resize), interpolation=interpolation)
    offset = (resize - crop) // 2
    centre = img[offset:offset + crop, offset:offset + crop]
    return Decoded(np.ascontiguousarray(UPRIGHT.get(orientation, np.asarray)(centre)), remarks)


def normalize(rgb: np.ndarray, preprocessing: dict) -> np.ndarray:
    """HWC uint8 RGB -> HWC float32 in the channel order, scale, mean and std the weights were trained with."""
    x = rgb.astype(np.float32)
    if preprocessing["channel_order"] == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    x = (x * np.float32(preprocessing["scale"] / UINT8_MAX) - mean) / std
    return np.ascontiguousarray(x, dtype=np.float32)


def load_image(path, preprocessing: dict, loader: str = "pillow") -> np.ndarray:
    """The network input for one photo: HWC float32, (crop, crop, 3). Raises ImageError naming the file."""
    return read_photo(path, preprocessing, loader).image


def read_photo(path, preprocessing: dict, loader: str = "pillow") -> Photo:
    """load_image, with what the decoder said about damaged data it could still decode."""
    decoded = decode_crop(path, preprocessing, loader)
    return Photo(normalize(decoded.rgb, preprocessing), decoded.remarks)


def load_crop(path, preprocessing: dict, loader: str = "pillow") -> np.ndarray:
    """The pixels the network sees of one photo: HWC uint8 RGB, (crop, crop, 3). Raises ImageError naming
    the file."""
    return decode_crop(path, preprocessing, loader).rgb


def decode_crop(path, preprocessing: dict, loader: str) -> Decoded:
    """The centre crop of one photo as the chosen loader decodes it, with its remarks. Raises ImageError
    naming the file and what to do."""
    path = Path(path)
    resize, crop = preprocessing["resize_shorter_side"], preprocessing["center_crop"]
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file")
    try:
        decoded = (pillow_rgb_crop if loader == "pillow" else opencv_rgb_crop)(path, resize, crop)
    except PermissionError:
        raise ImageError(path, "permission denied; make the file readable") from None
    except Image.DecompressionBombError as e:
        limit = e.args[0].split(", could be")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise ImageError(path, f"too large to decode safely: {limit} (Pillow's decompression-bomb guard); "
                               "scale the image down") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        reason = "not an image Pillow can read" if isinstance(e, Image.UnidentifiedImageError) else str(e)
        raise ImageError(path, f"cannot read image ({reason})") from None
    return decoded
