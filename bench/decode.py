"""What decoding a photo costs: the median time per photo, from the file to the 224x224 crop, of each loader,
decoding at full size and reduced (common/image.py), one photo at a time on one core.

    python -m bench.decode [FOLDER] [--repeat 3] [--grain SIGMA]

Without FOLDER, a folder of 12-megapixel JPEGs made from pics/ (bench/album.py, with --grain if given). Each
photo is decoded --repeat times and its fastest time kept (the file is in the page cache after the first).
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.album import DEFAULT_PHOTOS, make_album
from common.cli import positive_int
from common.errors import UserError
from common.image import images_in, opencv_rgb_crop, pillow_rgb_crop
from common.paths import WEIGHTS_DIR
from common.timing import MS_PER_S, timed
from common.weights import load_manifest

DEFAULT_REPEAT = 3
LOADER_CROPS = {"pillow": pillow_rgb_crop, "opencv": opencv_rgb_crop}


def fastest_s(photo: Path, crop, reduce: bool, repeat: int, prep: dict) -> float:
    try:
        return min(timed(crop, photo, prep["resize_shorter_side"], prep["center_crop"], reduce)[1]
                   for _ in range(repeat))
    except (OSError, ValueError) as e:
        raise UserError(f"{photo}: cannot decode it ({e}); time a folder of intact photos") from None


def median_ms(photos: list[Path], crop, reduce: bool, repeat: int, prep: dict) -> float:
    return statistics.median(fastest_s(photo, crop, reduce, repeat, prep) for photo in photos) * MS_PER_S


def report(photos: list[Path], repeat: int) -> str:
    prep = load_manifest(WEIGHTS_DIR)["preprocessing"]
    megabytes = statistics.median(p.stat().st_size for p in photos) / 1e6
    lines = [f"{len(photos)} photos, median file {megabytes:.1f} MB; median ms per photo, fastest of {repeat}:",
             f"{'loader':8} {'full size':>10} {'reduced':>10} {'speed-up':>9}"]
    for loader, crop in LOADER_CROPS.items():
        full, reduced = (median_ms(photos, crop, reduce, repeat, prep) for reduce in (False, True))
        lines.append(f"{loader:8} {full:10.1f} {reduced:10.1f} {full / reduced:8.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.decode", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="photos to decode (default: 12-megapixel JPEGs made "
                                                                 "from pics/)")
    parser.add_argument("--repeat", type=positive_int, default=DEFAULT_REPEAT, metavar="N",
                        help="decodes per photo; the fastest counts (default: %(default)s)")
    parser.add_argument("--grain", type=float, default=0.0, metavar="SIGMA",
                        help="without FOLDER: sensor-like noise in the photos made (bench/album.py)")
    args = parser.parse_args(argv)
    try:
        if args.folder is None:
            with tempfile.TemporaryDirectory(prefix="resnet50-album-") as folder:
                print(report(make_album(Path(folder), DEFAULT_PHOTOS, args.grain), args.repeat))
        elif not args.folder.is_dir() or not (photos := images_in(args.folder)):
            raise UserError(f"{args.folder}: not a folder with images in it")
        else:
            print(report(photos, args.repeat))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
