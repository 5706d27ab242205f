"""End to end: a folder of phone photos through the fastest stage's own command line, in photos per second, beside
the same stage's forward-only rate from the same `make bench` run (bench/test_latency.py).

The folder: `--photos` (24) JPEGs of 12 megapixels made from pics/ by bench/album.py when the benchmark starts.
The command: `python -m stages.<fastest> FOLDER FOLDER FOLDER --json --loader pillow|opencv --threads N`, the
default warm-up and repeat, as a user runs it, in a process of its own: the folder PASSES times over, since one
pass is timed in about 0.7 s, and on a shared machine the rate of one pass varied from 31 to 39 photos/s from
run to run. The clock: the moment each result line arrives.

The command line decodes photos in batches, one per core (common/prefetch.py), so the first batch is decoded
before the model is built, and the first result line comes after the build, the kernel compilation and the
warm-up: one-off costs of seconds. The timed rounds are therefore the waits for the lines after the first
batch's: one round per photo, from one line to the next, so the photos/s over them is rounds / their sum (the
mean, not the median: photos come out in batches, a long wait and then a short one). Every photo's top-1 must
be the reference's on the same photo decoded at full size (a fast wrong answer is not a result), and stderr
must hold only the stage's own set-up lines.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.album import MEGAPIXELS, make_album
from bench.test_latency import announce
from common.cli import DECODERS
from common.image import normalize, opencv_rgb_crop, pillow_rgb_crop
from common.paths import REPO, WEIGHTS_DIR
from common.reference import Reference
from common.stages import FASTEST
from common.timing import MS_PER_S

PASSES = 3
CROPS = {"pillow": pillow_rgb_crop, "opencv": opencv_rgb_crop}
TIMEOUT_S = 600


@pytest.fixture(scope="session")
def album(pytestconfig, tmp_path_factory) -> list[Path]:
    return make_album(tmp_path_factory.mktemp("album"), pytestconfig.getoption("photos"))


@pytest.fixture(scope="session")
def reference(threads) -> Reference:
    return Reference(WEIGHTS_DIR, threads=threads)


class ResultLines:
    """A stage's command line over a folder, read one JSON result line at a time as it arrives."""

    def __init__(self, command: list[str]):
        self.command = command
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[dict] = []

    def next(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(self.command)} stopped after {len(self.lines)} photos: "
                               f"{self.process.stderr.read().strip()[-500:]}")
        self.lines.append(json.loads(line))
        return self.lines[-1]

    def finish(self) -> str:
        """Waits for the process; its stderr. It must have exited with 0."""
        _, errors = self.process.communicate(timeout=TIMEOUT_S)
        assert self.process.returncode == 0, f"{' '.join(self.command)}: exit code {self.process.returncode}: {errors}"
        return errors


def test_end_to_end(loader, benchmark, threads, album, reference, manifest, capsys):
    label = f"{FASTEST} end to end, {loader}"
    folder = album[0].parent
    announce(capsys, f"\n{label}: {len(album)} photos of {MEGAPIXELS} megapixels, {PASSES} times over; building and "
                     "warming up in a process of its own")
    command = [sys.executable, "-m", f"stages.{FASTEST}", *[str(folder)] * PASSES, "--json", "--loader", loader,
               "--threads", str(threads)]
    run = ResultLines(command)
    rounds = len(album) * PASSES - DECODERS
    assert rounds > 0, f"--photos {len(album)}: {PASSES} passes hold no photo beyond the first batch of {DECODERS}"
    for _ in range(DECODERS):
        run.next()
    benchmark.pedantic(run.next, rounds=rounds, iterations=1, warmup_rounds=0)
    status = run.finish().splitlines()
    # Intact photos: only the stage's set-up and warm-up lines, no error or warning, nothing from a decoder.
    assert all(line.startswith((FASTEST, "warm-up")) for line in status), "\n".join(status)

    prep = manifest["preprocessing"]
    assert [line["image"] for line in run.lines] == [str(photo) for photo in album] * PASSES, "results out of order"
    for i, photo in enumerate(album):
        full = CROPS[loader](photo, prep["resize_shorter_side"], prep["center_crop"], reduce=False).rgb
        want = int(np.argmax(reference.forward(normalize(full, prep))))
        got = {line["top5"][0]["class_id"] for line in run.lines[i::len(album)]}
        assert got == {want}, f"{photo.name}: top-1 {got}, at full size {want}"
    mean_s = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "kind": "end_to_end", "stage": FASTEST, "loader": loader, "photos": len(album), "passes": PASSES,
        "decoders": DECODERS, "megapixels": MEGAPIXELS, "threads": threads, "command": " ".join(command[1:]),
        "status": status,
    })
    announce(capsys, f"{label}: {1 / mean_s:.1f} photos/s over the last {rounds} photos "
                     f"({mean_s * MS_PER_S:.1f} ms each); every top-1 as the full-size decode's")

