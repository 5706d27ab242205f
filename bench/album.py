"""A folder of phone photos made from pics/: each picture scaled up to 12 megapixels (keeping its shape) and saved
as a JPEG, pics/ over and over until the folder holds as many as asked for.

    python -m bench.album FOLDER [--photos 24] [--grain SIGMA]

Scaled-up pictures are smoother than a phone's photos, whose sensor noise and fine detail take more bits, and
the bits are what a reduced decode still has to read in full; --grain adds noise of that kind (Gaussian, SIGMA
levels of 0..255, per pixel and channel). `make bench` and tests/test_large_photos.py make their folders here.
"""

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from common.cli import positive_int
from common.image import images_in
from common.paths import PICS_DIR

MEGAPIXELS = 12  # a phone's main camera: 4000 x 3000
PIXELS = MEGAPIXELS * 1_000_000
JPEG_QUALITY = 92  # what phones save at, about
DEFAULT_PHOTOS = 24
GRAIN_SEED = 0  # the same grain on every run: figures from two runs compare


def scaled_up(picture: Image.Image, grain: float, rng: np.random.Generator) -> Image.Image:
    """The picture at MEGAPIXELS, its aspect ratio kept, with Gaussian grain of `grain` levels (0: none)."""
    factor = math.sqrt(PIXELS / (picture.width * picture.height))
    big = picture.convert("RGB").resize((round(picture.width * factor), round(picture.height * factor)),
                                        Image.Resampling.BICUBIC)
    if not grain:
        return big
    noisy = np.asarray(big, np.float32) + rng.normal(0.0, grain, (big.height, big.width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(np.round(noisy), 0, 255).astype(np.uint8))


def make_album(folder: Path, photos: int = DEFAULT_PHOTOS, grain: float = 0.0) -> list[Path]:
    """Writes `photos` JPEGs into folder, named so that their sorted order is the order they were made in,
    each after the picture of pics/ it was made from; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    pictures = images_in(PICS_DIR)
    rng = np.random.default_rng(GRAIN_SEED)
    made = []
    for i in range(photos):
        source = pictures[i % len(pictures)]
        with Image.open(source) as picture:
            path = folder / f"{i:03d}_{source.stem}.jpg"
            scaled_up(picture, grain, rng).save(path, quality=JPEG_QUALITY)
        made.append(path)
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.album", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--photos", type=positive_int, default=DEFAULT_PHOTOS, metavar="N",
                        help="how many (default: %(default)s)")
    parser.add_argument("--grain", type=float, default=0.0, metavar="SIGMA",
                        help="sensor-like noise, in levels of 0..255 (default: none)")
    args = parser.parse_args(argv)
    try:
        made = make_album(args.folder, args.photos, args.grain)
    except OSError as e:
        print(f"error: {args.folder}: cannot write the photos there ({e.strerror}); choose another folder",
              file=sys.stderr)
        return 1
    megabytes = sum(p.stat().st_size for p in made) / 1e6
    print(f"wrote {len(made)} photos of {MEGAPIXELS} megapixels, {megabytes:.0f} MB, into {args.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
