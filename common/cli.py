"""The command line every stage shares:

    python -m stages.<stage> [IMAGE|DIR ...] [--json] [--warmup N] [--repeat N] [--loader pillow|opencv]

Without images it classifies pics/. Per image it prints the top-5 (class id, label, probability) and
the median latency of the forward pass; with --json, one JSON object per image per line. A bad input
is reported (an "error" line in --json) and the run goes on; the exit code is then 1. A photo whose
decoder complained of damaged data it could still decode gets a warning line (a "warning" key in --json).
A threaded stage uses one thread per core that other programs leave free (common/cpu_load.py), unless given
--threads N.
Missing or damaged weights stop the run with exit code 1. Usage errors exit with 2, as argparse does;
Ctrl-C with 130, in one line. Photos are decoded one per core at a time between the forward passes
(common/prefetch.py); the results come in the order the photos were given.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from common.cpu_load import OtherPrograms
from common.errors import EXIT_FAILED, ImageError, UserError, run_reporting_errors, say
from common.image import IMAGE_SUFFIXES, LOADERS, Photo, images_in, read_photo
from common.labels import format_top5, top5
from common.paths import PICS_DIR, WEIGHTS_DIR
from common.prefetch import decoded_in_batches
from common.stages import record
from common.timing import median_ms, repeat_timed, timed
from common.weights import load_manifest, verify

DECODERS = os.cpu_count() or 1  # photos decoded at once between the network's passes (common/prefetch.py)
# libgomp, numba's OpenMP layer here, keeps its threads spinning for 300000 rounds after a parallel loop before
# they sleep: about 9 ms of a core after every forward pass on the development machine, which the decoders then
# wait for. 10000 rounds still cover the gaps between the loops of one forward pass (its speed did not change).
OMP_SPIN_ROUNDS = 10000


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def _int_at_least(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}")
    return value


def parse_args(stage: str, argv: list[str] | None, threads: bool) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage}",
                                     description=f"Classify photos with ResNet-50 ({stage}).")
    parser.add_argument("images", nargs="*", type=Path, metavar="IMAGE|DIR",
                        help="image files or folders of images (default: pics/)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--warmup", type=non_negative_int, default=1, metavar="N",
                        help="untimed forward passes before the first timed one (default: %(default)s)")
    parser.add_argument("--repeat", type=positive_int, default=1, metavar="N",
                        help="timed forward passes per image; the median is reported (default: %(default)s)")
    parser.add_argument("--loader", choices=LOADERS, default="pillow", help="image decoder (default: %(default)s)")
    parser.add_argument("--weights", type=Path, default=WEIGHTS_DIR, metavar="DIR",
                        help="exported weights (default: %(default)s)")
    parser.add_argument("--verify-weights", action="store_true",
                        help="check every weight file's sha256 against the manifest first")
    if threads:
        parser.add_argument("--threads", type=positive_int, metavar="N",
                            help=f"threads for the parallel loops (default: one per core of {os.cpu_count()} that "
                                 "other programs leave free, measured while the stage builds)")
    return parser.parse_args(argv)


def set_threads(count: int) -> None:
    """numba's thread count for the parallel loops, as `--threads N` asks; a UserError beyond numba's pool."""
    import numba

    if count > numba.config.NUMBA_NUM_THREADS:
        raise UserError(f"--threads {count}: at most {numba.config.NUMBA_NUM_THREADS} (numba's NUMBA_NUM_THREADS)")
    numba.set_num_threads(count)


def expand(paths: list[Path]) -> list[Path | ImageError]:
    """Files as given; folders replaced by the images in them (by suffix, sorted). Problems become ImageErrors."""
    found: list[Path | ImageError] = []
    for path in paths:
        if not path.is_dir():
            found.append(path)
            continue
        try:
            images = images_in(path)
        except PermissionError:
            found.append(ImageError(path, "permission denied; make the folder readable"))
            continue
        found.extend(images or [ImageError(path, f"no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")])
    return found


def default_pictures() -> Path:
    """pics/, shown relative to the current folder when it is inside it (as `make run` runs)."""
    return PICS_DIR.relative_to(Path.cwd()) if PICS_DIR.is_relative_to(Path.cwd()) else PICS_DIR


def main(stage: str, make_model: Callable, argv: list[str] | None = None) -> int:
    """Run a stage's command line. `make_model(weights_dir)` builds the stage's model, which has
    `forward(image_hwc) -> logits` and `timings`, a dict of set-up costs in seconds."""
    threads = record(stage).threads
    args = parse_args(stage, argv, threads)
    os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_ROUNDS))  # read when numba starts its threads
    # A bad photo is reported and skipped inside classify_all; a weights problem ends the run here, also when a
    # stage finds it during a forward pass (stage 1 reads its weights lazily): it would spoil every photo.
    return run_reporting_errors(lambda: classify_all(stage, make_model, args, threads))


def classify_all(stage: str, make_model: Callable, args: argparse.Namespace, threads: bool) -> int:
    status = sys.stderr if args.json else sys.stdout
    if threads:
        import numba

        pool_size = numba.config.NUMBA_NUM_THREADS
        if args.threads and args.threads > pool_size:
            say(f"note: --threads {args.threads}: numba's thread pool has {pool_size} threads "
                f"(set NUMBA_NUM_THREADS to allow more); using {pool_size}")
        numba.set_num_threads(min(args.threads or pool_size, pool_size))
    manifest = load_manifest(args.weights)
    if args.verify_weights:
        say(f"verified the sha256 of {verify(args.weights)} weight files", file=status)

    failed = 0
    model = None  # built at the first photo that decodes: a run over bad files only does not wait for set-up
    load = partial(_read, preprocessing=manifest["preprocessing"], loader=args.loader)
    with decoded_in_batches(expand(args.images or [default_pictures()]), load, DECODERS) as photos:
        for path, photo in photos:
            try:
                image, remarks = photo.result()
            except ImageError as e:
                failed += 1
                say(f"error: {e}")
                if args.json:
                    print(json.dumps({"image": str(e.path), "error": str(e)}), flush=True)
                continue
            if remarks:
                say(f"warning: {path}: damaged data, classified as far as it decodes (the decoder says: {remarks})")
            if model is None:
                with OtherPrograms() as others:
                    model, build_s = timed(make_model, args.weights)
                setup = ", ".join(f"{k} {v:.2f} s" for k, v in {"build": build_s, **model.timings}.items())
                choice = f"{model.choice}; " if record(stage).tiles else ""  # what a tiled stage chose for this CPU
                if threads:
                    choice += thread_choice(args.threads, others)
                weights = f"{manifest['source']['package']} (ResNet-50 {manifest['variant']})"
                say(f"{stage}: weights {weights}; {choice}{setup}", file=status)
                if args.warmup:
                    _, warm_s = repeat_timed(model.forward, image, args.warmup)
                    say(f"warm-up: {args.warmup} run(s), {sum(warm_s):.2f} s "
                        "(the first compiles any kernel not compiled yet)", file=status)
            logits, seconds = repeat_timed(model.forward, image, args.repeat)
            top = top5(logits, manifest["labels"])
            latency = median_ms(seconds)
            if args.json:
                result = {"image": str(path), "top5": top, "latency_ms": round(latency, 3)}
                print(json.dumps(result | ({"warning": remarks} if remarks else {})), flush=True)
            else:
                print(f"{path}: {latency:.1f} ms (median of {args.repeat})\n{format_top5(top)}", flush=True)
    return EXIT_FAILED if failed else 0


def thread_choice(asked: int | None, others: OtherPrograms) -> str:
    """Sets numba's thread count, unless `asked` set it already, to the cores `others` found free; says how many."""
    import numba

    if not asked:
        numba.set_num_threads(min(others.free_cores(), numba.config.NUMBA_NUM_THREADS))
    count = numba.get_num_threads()
    busy = f" (other programs kept {others.busy_cores:.1f} of {len(others.cores)} cores busy)" if not asked else ""
    return f"{count} thread{'s' if count > 1 else ''}{busy}; "


def _read(item: Path | ImageError, preprocessing: dict, loader: str) -> Photo:
    """read_photo, in a decoding thread; an ImageError from expand() is raised in its place."""
    if isinstance(item, ImageError):
        raise item
    return read_photo(item, preprocessing, loader)
