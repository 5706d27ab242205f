"""Reading any photo as HWC uint8 RGB and writing results as PNG, with one-line errors a user can act on.

Decoding reuses common.image (EXIF rotation, alpha onto white, 16-bit and CMYK handled there); unlike the
network's loader nothing is resized or cropped: the classic ops work on the full picture.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import ImageError, UserError
from common.image import pillow_rgb


def read_rgb(path) -> np.ndarray:
    """HWC uint8 RGB, the whole picture. Raises ImageError naming the file."""
    path = Path(path)
    if not path.exists():
        raise ImageError(path, "no such file; give the path of a photo")
    if path.is_dir():
        raise ImageError(path, "is a directory; give the path of a photo")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return np.asarray(pillow_rgb(path), dtype=np.uint8)
    except PermissionError:
        raise ImageError(path, "permission denied; make the file readable") from None
    except Image.DecompressionBombError:
        raise ImageError(path, "too large to decode safely; give a smaller photo") from None
    except Image.UnidentifiedImageError:
        raise ImageError(path, "not an image Pillow can read; give a photo (PNG, JPEG, ...)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageError(path, f"cannot read image ({e}); give a photo Pillow can open") from None


@contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Around the code that writes `path`: creates its folder, and turns a failure into a one-line UserError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield path
    except OSError as e:
        raise UserError(f"{path}: cannot write the output ({e.strerror or e}); choose another path") from None
    except ValueError as e:  # Pillow and matplotlib: a file extension they cannot write
        raise UserError(f"{path}: cannot write the output ({e}); end the name with .png") from None


def write_png(path, pixels: np.ndarray) -> Path:
    """Save HW (grey) or HWC (RGB) uint8 pixels; the format follows the file name (.png is lossless)."""
    with writing(Path(path)) as path:
        Image.fromarray(pixels).save(path)
    return path
