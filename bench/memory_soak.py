"""Memory over a long run: classify many photos in one process with one stage, the way a user's folder of
holiday pictures would go through `python -m stages.<stage>`, and report the resident memory (RSS) after the
first WARM images and after the last. Flat is right: whatever a stage allocates per image must be freed.

    python -m bench.memory_soak [--stage 7] [--images 300] [--json]

The photos are pics/, over and over; each is decoded again every time, as in the command line's loop.
The first WARM images absorb one-off growth (JIT compilation, numba's and numpy's caches, allocator pools).
"""

import argparse
import json
import os
import sys

from bench.rows import select_stages
from common.errors import UserError
from common.image import images_in, load_image
from common.labels import top5
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.stages import STAGES, stage_module
from common.weights import load_manifest

WARM = 20
DEFAULT_IMAGES = 300
MB = 1 << 20
STATM = "/proc/self/statm"  # Linux: sizes in pages; the second field is the resident set


def resident_mb() -> float:
    with open(STATM) as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MB


def soak(stage: str, images: int, weights_dir=WEIGHTS_DIR) -> dict:
    """Classify `images` photos; the resident memory after WARM and after all of them, in MB."""
    manifest = load_manifest(weights_dir)
    model = stage_module(stage).Model(weights_dir)
    pictures = images_in(PICS_DIR)
    after_warm = None
    for i in range(images):
        image = load_image(pictures[i % len(pictures)], manifest["preprocessing"])
        top5(model.forward(image), manifest["labels"])
        if i + 1 == WARM:
            after_warm = resident_mb()
    after_all = resident_mb()
    return {"stage": stage, "images": images, "warm": WARM, "rss_after_warm_mb": round(after_warm, 2),
            "rss_after_all_mb": round(after_all, 2), "growth_mb": round(after_all - after_warm, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory_soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", default=STAGES[-1],
                        help="stage number or name (default: the fastest, %(default)s)")
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                        help=f"photos to classify, more than {WARM} (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = parser.parse_args(argv)
    if args.images <= WARM:
        parser.error(f"--images must be more than {WARM}")
    if not os.path.exists(STATM):
        print(f"error: {STATM} not found: resident memory is read from Linux's /proc", file=sys.stderr)
        return 1
    try:
        (stage,) = select_stages(args.stage)
        result = soak(stage, args.images)
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
