"""Photo -> network input: an HWC float32 array of shape (224, 224, 3).

Steps: decode (any format Pillow opens; the first frame of an animation), apply the EXIF orientation,
turn any mode into RGB (alpha composited onto white, 16-bit scaled to 8-bit, CMYK converted),
resize so the shorter side is 256 (bilinear), take the centre 224x224, then normalize with the
manifest's preprocessing: channel order, x = (pixel / 255 * scale - mean) / std.

Two loaders: ``pillow`` (the default, and the one the tests' reference uses) and ``opencv``, a second
implementation with OpenCV that matches the Pillow tensor closely but not exactly: OpenCV decodes JPEG
with another IDCT and resizes with INTER_AREA (downscaling) / INTER_LINEAR (upscaling) instead of
Pillow's antialiased bilinear filter. tests/test_images.py states how close.
"""

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from common.errors import ImageError

LOADERS = ("pillow", "opencv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
WHITE = 255
UINT8_MAX = 255
UINT16_TO_UINT8 = 257  # 65535 / 255


def images_in(folder: Path) -> list[Path]:
    """The image files in a folder (by suffix, not recursive), sorted."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """HWC uint8 RGBA -> RGB, composited onto white: transparent pixels show as background, not as black."""
    alpha = rgba[..., 3:4].astype(np.float32) / UINT8_MAX
    rgb = rgba[..., :3].astype(np.float32) * alpha + WHITE * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)


def pillow_rgb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        img.seek(0)  # first frame of an animated GIF/WebP/TIFF
        img = ImageOps.exif_transpose(img)
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


def pillow_rgb_crop(path: Path, resize: int, crop: int) -> np.ndarray:
    """HWC uint8 RGB, crop x crop: the centre of the image scaled so that its shorter side is `resize`.
    Resizing only the crop box (Pillow's box=) gives the same pixels as resizing everything and then
    cropping, without building a huge intermediate image for a very wide panorama."""
    img = pillow_rgb(path)
    w, h = img.size
    side = crop * min(w, h) / resize  # the crop's side in source pixels
    left, top = (w - side) / 2, (h - side) / 2
    out = img.resize((crop, crop), Image.Resampling.BILINEAR, box=(left, top, left + side, top + side))
    return np.asarray(out, dtype=np.uint8)


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


def opencv_rgb_crop(path: Path, resize: int, crop: int) -> np.ndarray:
    import cv2

    # Pillow reads only the header here: the size, checked against the same decompression-bomb limit as the
    # Pillow loader, and the EXIF orientation, which OpenCV ignores when it keeps alpha and 16 bits.
    with Image.open(path) as header:
        orientation = header.getexif().get(EXIF_ORIENTATION, 1)
    data = np.fromfile(path, dtype=np.uint8)
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ValueError(f"OpenCV cannot decode it: {e.err}") from None
    if img is None:
        raise ValueError("OpenCV cannot decode it")
    if img.dtype == np.uint16:
        img = (img // UINT16_TO_UINT8).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = _flatten_alpha(cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA))
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = np.ascontiguousarray(UPRIGHT.get(orientation, np.asarray)(img))
    # The crop lies inside the centre square; cutting that out first keeps a very wide panorama from being
    # resized whole (a 100000 x 10 strip would grow to gigabytes).
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    interpolation = cv2.INTER_AREA if side > resize else cv2.INTER_LINEAR
    img = cv2.resize(img[top:top + side, left:left + side], (resize, resize), interpolation=interpolation)
    offset = (resize - crop) // 2
    return img[offset:offset + crop, offset:offset + crop]


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
    return normalize(load_crop(path, preprocessing, loader), preprocessing)


def load_crop(path, preprocessing: dict, loader: str = "pillow") -> np.ndarray:
    """The pixels the network sees of one photo: HWC uint8 RGB, (crop, crop, 3). Raises ImageError naming
    the file."""
    path = Path(path)
    resize, crop = preprocessing["resize_shorter_side"], preprocessing["center_crop"]
    if not path.exists():
        raise ImageError(path, "no such file")
    if path.is_dir():
        raise ImageError(path, "is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            rgb = (pillow_rgb_crop if loader == "pillow" else opencv_rgb_crop)(path, resize, crop)
    except PermissionError:
        raise ImageError(path, "permission denied; make the file readable") from None
    except Image.DecompressionBombError as e:
        limit = e.args[0].split(", could be")[0]  # "Image size (N pixels) exceeds limit of M pixels"
        raise ImageError(path, f"too large to decode safely: {limit} (Pillow's decompression-bomb guard); "
                               "scale the image down") from None
    except (OSError, ValueError, SyntaxError, Image.UnidentifiedImageError) as e:
        reason = "not an image Pillow can read" if isinstance(e, Image.UnidentifiedImageError) else str(e)
        raise ImageError(path, f"cannot read image ({reason})") from None
    return rgb
