"""Memory over a long run: classify many photos in one process with one stage, the way a user's folder of
holiday pictures would go through `python -m stages.<stage>`, and report the resident memory (RSS) after the
first WARM images and after the last. Flat is right: whatever a stage allocates per image must be freed.

    python -m bench.memory_soak [--stage 7] [--images 300] [--folder DIR] [--json]

The photos are those in pics/ (or DIR), over and over; each is decoded again every time, in batches of one per
core as the command line decodes them (common/prefetch.py). The first WARM images absorb one-off growth (JIT
compilation, numba's and numpy's caches, allocator pools, the decoding threads).
"""

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path

from common.cli import DECODERS
from common.errors import UserError
from common.image import images_in, load_image
from common.labels import top5
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.prefetch import decoded_in_batches
from common.stages import FASTEST, find_stage, stage_module
from common.weights import load_manifest

WARM = 20
DEFAULT_IMAGES = 300
MB = 1 << 20
STATM = "/proc/self/statm"  # Linux: sizes in pages; the second field is the resident set


def resident_mb() -> float:
    with open(STATM) as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MB


def soak(stage: str, images: int, folder: Path = PICS_DIR, weights_dir=WEIGHTS_DIR) -> dict:
    """Classify `images` photos from folder; the resident memory after WARM and after all of them, in MB."""
    manifest = load_manifest(weights_dir)
    model = stage_module(stage).Model(weights_dir)
    if not folder.is_dir() or not (pictures := images_in(folder)):
        raise UserError(f"{folder}: not a folder with images in it")
    paths = (pictures[i % len(pictures)] for i in range(images))
    after_warm = None
    with decoded_in_batches(paths, partial(load_image, preprocessing=manifest["preprocessing"]), DECODERS) as photos:
        for i, (_, photo) in enumerate(photos):
            top5(model.forward(photo.result()), manifest["labels"])
            if i + 1 == WARM:
                after_warm = resident_mb()
    after_all = resident_mb()
    return {"stage": stage, "images": images, "warm": WARM, "rss_after_warm_mb": round(after_warm, 2),
            "rss_after_all_mb": round(after_all, 2), "growth_mb": round(after_all - after_warm, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default=FASTEST,
                        help="stage number or name (default: the fastest, %(default)s)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                        help=f"photos to classify, more than {WARM} (default: %(default)s)")
    parser.add_argument("--folder", type=Path, default=PICS_DIR, metavar="DIR",
                        help="the photos, over and over (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    if args.images <= WARM:
        parser.error(f"--images must be more than {WARM}")
    if not os.path.exists(STATM):
        print(f"error: {STATM} not found: resident memory is read from Linux's /proc", file=sys.stderr)
        return 1
    try:
        stage = find_stage(args.stage)
        result = soak(stage, args.images, args.folder)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{stage}: resident memory {result['rss_after_warm_mb']:.1f} MB after {WARM} images, "
              f"{result['rss_after_all_mb']:.1f} MB after {args.images} ({result['growth_mb']:+.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
