"""Latency of every row (stages, then peers) on one image, with pytest-benchmark.

Per row: the time to first answer of a fresh process, cold and warm (bench/first_answer.py), then in this
process: build the model (its set-up costs come from ``model.timings``), one warm-up forward (JIT
compilation happens here for the stages that compile lazily), a check that its top-1 class agrees with the
PyTorch reference (a fast wrong answer is not a result), two more forwards to estimate the time per round,
then as many timed rounds as fit the per-row budget. Run it with ``python -m bench``, which also writes
the report; bench/README.md explains the options.
"""

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.first_answer import first_answer
from bench.peers import PEER_CLASSES
from bench.report import SETUP_COLUMNS
from bench.rows import build, precision, rounds_for
from common.architecture import resnet50
from common.paths import WEIGHTS_DIR
from common.reference import Reference
from common.stages import find_stage, record
from common.timing import MS_PER_S, timed

LOG_LINES_PER_ROW = 4
ESTIMATE_PASSES = 2


@pytest.fixture(scope="session")
def reference_top1(image, threads) -> int:
    return int(np.argmax(Reference(WEIGHTS_DIR, threads=threads).forward(image)))


def announce(capsys, text: str) -> None:
    """A line on the terminal now, past pytest's output capture."""
    with capsys.disabled():
        print(text, file=sys.stderr, flush=True)


class Progress:
    """'[2/9] stage2_simd: round 17/120', rewritten in place every round on a terminal; in a log, a line
    every LOG_LINES_PER_ROW-th of the rounds."""

    def __init__(self, capsys, label: str, rounds: int, image: np.ndarray):
        self.capsys, self.label, self.rounds, self.image = capsys, label, rounds, image
        self.done = 0
        self.live = sys.stderr.isatty()
        self.every = 1 if self.live else math.ceil(rounds / LOG_LINES_PER_ROW)

    def write(self, text: str, end: str) -> None:
        with self.capsys.disabled():
            sys.stderr.write(f"\r{text}{end}" if self.live else f"{text}\n")
            sys.stderr.flush()

    def before_round(self):
        """pytest-benchmark's untimed set-up hook: reports the round, returns the forward's (args, kwargs)."""
        self.done += 1
        if self.done % self.every == 0:
            self.write(f"{self.label}: round {self.done}/{self.rounds}", end="")
        return (self.image,), {}

    def finish(self, median_ms: float) -> None:
        self.write(f"{self.label}: {self.rounds} rounds, median {median_ms:.2f} ms", end="\n")


def predecessor(row: str) -> str | None:
    """The stage folder a stage adds its idea to (its record's), None for stage 1 and the peers."""
    if row in PEER_CLASSES or record(row).predecessor < 1:
        return None
    return find_stage(str(record(row).predecessor))


def test_latency(row, benchmark, image, threads, manifest, reference_top1, request, capsys):
    position = f"[{request.node.callspec.indices['row'] + 1}/{len(request.session.items)}] {row}"
    kind = "peer" if row in PEER_CLASSES else "stage"
    first = None
    if request.config.getoption("first_answer"):
        announce(capsys, f"\n{position}: time to first answer, in fresh processes (cold, then warm)")
        first = first_answer(row, kind, Path(request.config.getoption("image")), threads)
        announce(capsys, f"{position}: first answer after {first['cold']:.2f} s cold, {first['warm']:.2f} s warm")
    announce(capsys, f"\n{position}: building")
    model, build_s = timed(build, row, WEIGHTS_DIR, threads)
    announce(capsys, f"{position}: built in {build_s:.1f} s; warm-up forward")
    unknown = set(model.timings) - set(SETUP_COLUMNS)
    assert not unknown, f"{row} reports set-up costs {sorted(unknown)} that bench/report.py SETUP_COLUMNS lacks"

    logits, first_s = timed(model.forward, image)
    top1 = int(np.argmax(logits))
    assert top1 == reference_top1, f"{row}: top-1 class {top1}, the PyTorch reference says {reference_top1}"
    # The faster of two forward passes: one slow pass on a busy machine would cut the rounds short.
    estimate_s = min(timed(model.forward, image)[1] for _ in range(ESTIMATE_PASSES))
    config = request.config
    rounds = rounds_for(estimate_s, config.getoption("seconds"), config.getoption("min_rounds"),
                        config.getoption("max_rounds"))
    announce(capsys, f"{position}: top-1 {manifest['labels'][top1]!r}, as PyTorch's; {rounds} rounds of "
                     f"about {estimate_s * MS_PER_S:.0f} ms")

    benchmark.extra_info.update({
        "kind": kind, "first_answer_s": first, "precision": precision(row), "predecessor": predecessor(row),
        "peak": model.peak if kind == "peer" else record(row).peak,
        "setup_s": dict(model.timings), "build_s": build_s, "first_forward_s": first_s,
        "top1": {"class_id": top1, "label": manifest["labels"][top1]},
        "macs": resnet50(manifest["variant"]).macs, "variant": manifest["variant"], "threads": threads,
        "image": Path(request.config.getoption("image")).name,
    })
    progress = Progress(capsys, position, rounds, image)
    benchmark.pedantic(model.forward, setup=progress.before_round, rounds=rounds, iterations=1, warmup_rounds=0)
    progress.finish(benchmark.stats.stats.median * MS_PER_S)
